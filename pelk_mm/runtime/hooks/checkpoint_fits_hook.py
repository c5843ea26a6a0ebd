"""Refuse a checkpoint that does not fit the model or is not finite."""
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel, is_model_wrapper

from ...registry import HOOKS
from ..checkpoint_fit import (CheckpointMismatchError, mismatch_error,
                              state_dict_of, without_wrapper_prefix)


@HOOKS.register_module()
class CheckpointFitsHook(Hook):
    """Stop when a loaded checkpoint does not fit the model, or holds
    non-finite weights.

    mmengine loads checkpoints non-strictly: it only warns about missing
    keys and skips weights of another shape, so a file of another
    architecture or head (another number of classes), one whose keys were
    renamed (another wrapper's prefix), a backbone-only file or one without
    the BN statistics is evaluated or fine-tuned with part of the model at
    its initialisation, and a metric that looks real. This hook checks the
    checkpoint the runner has just read (before its weights go into the
    model, so the file is read once): every entry of the model's state dict
    (parameters and persistent buffers, such as BN's running statistics) is
    in the file, with the model's shape, and finite. It raises naming the
    file, the count and examples of what does not fit, and what its keys
    look like. ``tools/test.py`` and ``tools/train.py`` (``load_from``)
    register it (``--allow-missing``, ``--allow-nonfinite``).

    Args:
        path (str): The checkpoint, for the message.
        hint (str): What the caller can do to go on anyway, appended to the
            message. Defaults to ''.
        allow_missing (bool): Check finiteness only (what
            ``--allow-missing`` asks for). Defaults to False.
        allow_nonfinite (bool): Accept NaN or infinite values (otherwise a
            ``CheckpointMismatchError`` names them). Defaults to False.

    Raises:
        CheckpointMismatchError: The checkpoint leaves entries of the
            model's state dict unloaded, gives them other shapes, or holds
            non-finite values (:mod:`pelk_mm.runtime.checkpoint_fit`).
    """
    priority = 'VERY_HIGH'

    def __init__(self,
                 path: str,
                 hint: str = '',
                 allow_missing: bool = False,
                 allow_nonfinite: bool = False):
        self.path = path
        self.hint = hint
        self.allow_missing = allow_missing
        self.allow_nonfinite = allow_nonfinite

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        if isinstance(getattr(model, 'module', None), BaseModel):
            model = model.module  # a test-time augmentation wrapper
        state = without_wrapper_prefix(state_dict_of(checkpoint))
        # BN's batch counter: absent from checkpoints of old torch, unused
        # by evaluation and fine-tuning.
        expected = {
            name: value
            for name, value in model.state_dict().items()
            if not name.endswith('num_batches_tracked')
        }
        if not self.allow_missing:
            self._check_fit(state, expected)
        if self.allow_nonfinite:
            return
        nonfinite = [
            name for name, value in state.items()
            if torch.is_tensor(value) and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ]
        if nonfinite:
            raise CheckpointMismatchError(
                f'checkpoint {self.path!r} holds NaN or infinite values in '
                f'{len(nonfinite)} tensors (e.g. {", ".join(nonfinite[:3])}): '
                f'it was saved after training diverged. Take an earlier '
                f'checkpoint, or pass --allow-nonfinite to use it anyway.')

    def _check_fit(self, state: dict, expected: dict) -> None:
        missing = [name for name in expected if name not in state]
        if missing:
            raise mismatch_error(
                self.path,
                'the model',
                missing,
                total=len(expected),
                keys=state,
                what='weights and buffers',
                hint=self.hint)
        shapes = [
            f'{name}: {tuple(state[name].shape)} in the file, '
            f'{tuple(value.shape)} in the model'
            for name, value in expected.items() if torch.is_tensor(state[name])
            and state[name].shape != value.shape
        ]
        if shapes:
            raise CheckpointMismatchError(
                f'checkpoint {self.path!r} does not fit the model: '
                f'{len(shapes)} of its {len(expected)} weights and buffers '
                f'have other shapes (e.g. {"; ".join(shapes[:3])}). It was '
                f'written for another arch, head or number of classes. '
                f'{self.hint}'.rstrip())
