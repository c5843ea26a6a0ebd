"""Stop training at the first non-finite loss or weight, before it is
saved."""
import math
from typing import Optional

import torch
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
    the weights finite and passes.

    Args:
        keys (str): Logged values whose name contains this are checked
            (the total ``loss`` and every term). Defaults to ``'loss'``.
        check_parameters (bool): Also check every parameter after the step
            (one reduction per parameter and one synchronisation an
            iteration). Defaults to True.

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
        if not all(math.isfinite(value) for value in values.values()):
            terms = ', '.join(f'{name}={value}'
                              for name, value in values.items())
            self._stop(runner, 'non-finite loss', terms)
        if self.check_parameters:
            bad = self._non_finite_parameters(runner.model)
            if bad:
                shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more'
                                              if len(bad) > 5 else '')
                self._stop(
                    runner, 'non-finite weights after the optimizer step',
                    f'{shown} (the loss was finite: a gradient was not)')

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
