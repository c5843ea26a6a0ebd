"""Refuse a checkpoint that leaves parameters of the model unloaded."""
from mmengine.hooks import Hook
from mmengine.model import BaseModel, is_model_wrapper

from ...registry import HOOKS
from ..checkpoint_fit import (mismatch_error, state_dict_of,
                              without_wrapper_prefix)


@HOOKS.register_module()
class CheckpointFitsHook(Hook):
    """Stop when a loaded checkpoint leaves parameters without weights.

    mmengine loads checkpoints non-strictly and only warns about missing
    keys, so a file of another architecture, one whose keys were renamed
    (another wrapper's prefix) or a backbone-only file is evaluated or
    fine-tuned at random initialisation with a metric that looks real. This
    hook checks the checkpoint the runner has just read (before its weights
    go into the model, so the file is read once) and raises naming the
    file, the count and examples of the parameters it leaves out, and what
    its keys look like. ``tools/test.py`` and ``tools/train.py``
    (``load_from``) register it unless told ``--allow-missing``.

    Args:
        path (str): The checkpoint, for the message.
        hint (str): What the caller can do to go on anyway, appended to the
            message. Defaults to ''.

    Raises:
        CheckpointMismatchError: The checkpoint leaves parameters of the
            model unloaded (:mod:`pelk_mm.runtime.checkpoint_fit`).
    """
    priority = 'VERY_HIGH'

    def __init__(self, path: str, hint: str = ''):
        self.path = path
        self.hint = hint

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        if isinstance(getattr(model, 'module', None), BaseModel):
            model = model.module  # a test-time augmentation wrapper
        keys = set(without_wrapper_prefix(state_dict_of(checkpoint)))
        names = [name for name, _ in model.named_parameters()]
        missing = [name for name in names if name not in keys]
        if missing:
            raise mismatch_error(
                self.path,
                'the model',
                missing,
                total=len(names),
                keys=keys,
                what='parameters',
                hint=self.hint)
