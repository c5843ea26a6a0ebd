"""Stop training at the first non-finite loss or weight, before it is
saved."""
import math
from typing import Optional

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...registry import HOOKS
from ..resume import named_by_last_checkpoint


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise at the first iteration whose loss is NaN or infinite, or after
    whose optimizer step a parameter is.

    A run whose loss has turned NaN otherwise goes on to its end, exits 0
    and, through checkpoint rotation, replaces the last good checkpoints with
    NaN-filled ones. So does a run whose loss stays finite while a gradient
    does not (an overflow in one layer's backward): the step writes the NaN
    into the weights, and the next iterations' losses may be NaN or not.
    This hook runs first after each training iteration (priority
    ``VERY_HIGH``, before the checkpoint hook), so the run stops before
    anything is written from the bad iteration on, and its message names the
    last checkpoint saved before it. Every config of pelk_mm sets it in
    ``default_hooks``.

    A step that the AMP loss scaler skips (its gradients were inf) leaves
    the weights finite and passes. In distributed training every rank stops
    at the same iteration, the others naming the rank that found it.

    Args:
        keys (str): Logged values whose name contains this are checked
            (the total ``loss`` and every term). Defaults to ``'loss'``.
        check_parameters (bool): Also check every parameter after the step
            (one reduction per parameter and one synchronisation an
            iteration; distributed, one all-reduce of two numbers more).
            Defaults to True.

    Raises:
        FloatingPointError: Naming the iteration, the non-finite terms or
            parameters, and the last good checkpoint.
    """
    priority = 'VERY_HIGH'

    def __init__(self, keys: str = 'loss', check_parameters: bool = True):
        self.keys = keys
        self.check_parameters = check_parameters

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None):
        values = {
            name: float(torch.as_tensor(value).detach())
            for name, value in (outputs or {}).items() if self.keys in name
        }
        terms = ', '.join(f'{name}={value}' for name, value in values.items())
        loss_ok = all(math.isfinite(value) for value in values.values())
        bad = (
            self._non_finite_parameters(runner.model)
            if self.check_parameters else [])
        # Every rank stops at the same iteration: one whose loss or weights
        # are finite would otherwise save the iteration (rank 0) or wait in
        # the next iteration's collectives for the ranks that stopped.
        loss_rank, weights_rank = self._first_ranks_with(not loss_ok, bad)
        if loss_rank is not None:
            self._stop(
                runner, 'non-finite loss', terms
                if not loss_ok else f'on rank {loss_rank} (here: {terms})')
        if weights_rank is not None:
            shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more'
                                          if len(bad) > 5 else '')
            self._stop(
                runner, 'non-finite weights after the optimizer step',
                f'{shown} (the loss was finite: a gradient was not)'
                if bad else f'on rank {weights_rank}')

    @staticmethod
    def _first_ranks_with(loss_bad: bool, weights_bad: list) -> tuple:
        """The first rank whose loss, and the first whose weights, are not
        finite (None where none is): this rank's answer alone outside
        distributed training, one all-reduce of two numbers in it."""
        world_size = dist.get_world_size()
        if world_size == 1:
            return (0 if loss_bad else None, 0 if weights_bad else None)
        rank = dist.get_rank()
        flags = torch.tensor([
            world_size - rank if loss_bad else 0,
            world_size - rank if weights_bad else 0
        ])
        dist.all_reduce(flags, op='max')
        return tuple(world_size - int(flag) if flag else None
                     for flag in flags)

    @staticmethod
    def _non_finite_parameters(model) -> list:
        module = model.module if is_model_wrapper(model) else model
        named = [(name, p) for name, p in module.named_parameters()
                 if p.requires_grad]
        if not named:
            return []
        sums = torch.stack([p.detach().float().sum() for _, p in named])
        if bool(torch.isfinite(sums.sum())):
            return []
        finite = torch.isfinite(sums).tolist()
        return [name for (name, _), ok in zip(named, finite) if not ok]

    @staticmethod
    def _stop(runner, what: str, detail: str) -> None:
        good = named_by_last_checkpoint(runner.work_dir)
        resume = (f'The last checkpoint saved before it is {good}: resume '
                  f'from it' if good else
                  f'No checkpoint was saved before it in {runner.work_dir}: '
                  f'start again')
        raise FloatingPointError(
            f'{what} at iteration {runner.iter + 1} (epoch '
            f'{runner.epoch + 1}): {detail}. Training stopped before saving '
            f'anything from this iteration. {resume} with a lower learning '
            f'rate or gradient clipping (optim_wrapper.clip_grad), or check '
            f'this batch\'s data.')
