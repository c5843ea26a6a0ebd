"""Stop training at the first non-finite loss, before it is saved."""
import math
from typing import Optional

import torch
from mmengine.hooks import Hook

from ...registry import HOOKS


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise at the first iteration whose loss is NaN or infinite.

    A run whose loss has turned NaN otherwise goes on to its end, exits 0
    and, through checkpoint rotation, replaces the last good checkpoints with
    NaN-filled ones. This hook runs first after each training iteration
    (priority ``VERY_HIGH``, before the checkpoint hook), so the run stops
    before anything is written from the bad iteration on. Every config of
    pelk_mm sets it in ``default_hooks``.

    Args:
        keys (str): Logged values whose name contains this are checked
            (the total ``loss`` and every term). Defaults to ``'loss'``.

    Raises:
        FloatingPointError: Naming the iteration and the non-finite terms.
    """
    priority = 'VERY_HIGH'

    def __init__(self, keys: str = 'loss'):
        self.keys = keys

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None):
        if not outputs:
            return
        values = {
            name: float(torch.as_tensor(value).detach())
            for name, value in outputs.items() if self.keys in name
        }
        bad = {
            name: value
            for name, value in values.items() if not math.isfinite(value)
        }
        if bad:
            terms = ', '.join(f'{name}={value}'
                              for name, value in values.items())
            raise FloatingPointError(
                f'non-finite loss at iteration {runner.iter + 1} (epoch '
                f'{runner.epoch + 1}): {terms}. Training stopped before '
                f'saving anything from this iteration; the checkpoints in '
                f'{runner.work_dir} are from before it. Resume from the last '
                f'one with a lower learning rate or gradient clipping '
                f'(optim_wrapper.clip_grad), or check this batch\'s data.')
