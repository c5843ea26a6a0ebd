"""What a run needs beyond the method, for any model: checkpoints that load
safely and fit, crash-safe saving and exact resumption, early stops with a
reason (a NaN loss, labels out of range, mmcv without the device's ops), a
progress bar. The hooks are set in every config's ``default_hooks``, the
loaders registered with mmengine when pelk_mm is imported. Depends on
mmengine and, of pelk_mm, only on its registry and its torch feature checks
(``ops/torch_features.py``)."""
from .checkpoint_fit import (CheckpointMismatchError, load_fitting,
                             load_pretrained, mismatch_error, require_file,
                             state_dict_of, strip_prefix,
                             without_wrapper_prefix)
from .hooks import (AtomicCheckpointHook, CheckpointFitsHook, FiniteLossHook,
                    MMCVOpsCheckHook, ProgressBarHook, RandomStateHook,
                    SegLabelCheckHook, check_mmcv_ops)
from .outputs import check_output, with_umask_mode
from .resume import find_resumable_checkpoint
from .safe_loading import load_from_local, read_checkpoint
from .work_dir import lock_work_dir, set_aside_earlier_run

__all__ = [
    'CheckpointMismatchError', 'load_fitting', 'load_pretrained',
    'mismatch_error', 'require_file', 'state_dict_of', 'strip_prefix',
    'without_wrapper_prefix', 'AtomicCheckpointHook', 'CheckpointFitsHook',
    'FiniteLossHook', 'MMCVOpsCheckHook', 'ProgressBarHook', 'RandomStateHook',
    'SegLabelCheckHook', 'check_mmcv_ops', 'find_resumable_checkpoint',
    'load_from_local', 'read_checkpoint', 'check_output', 'with_umask_mode',
    'lock_work_dir', 'set_aside_earlier_run'
]
