from .atomic_checkpoint_hook import AtomicCheckpointHook
from .checkpoint_fits_hook import CheckpointFitsHook, CheckpointMismatchError
from .dynamic_sparsity_hook import DynamicSparsityHook
from .finite_loss_hook import FiniteLossHook
from .mmcv_ops_check_hook import MMCVOpsCheckHook, check_mmcv_ops
from .progress_bar_hook import ProgressBarHook
from .random_state_hook import RandomStateHook
from .seg_label_check_hook import SegLabelCheckHook

__all__ = [
    'AtomicCheckpointHook', 'CheckpointFitsHook', 'CheckpointMismatchError',
    'DynamicSparsityHook', 'FiniteLossHook', 'MMCVOpsCheckHook',
    'ProgressBarHook', 'RandomStateHook', 'SegLabelCheckHook', 'check_mmcv_ops'
]
