from .atomic_checkpoint_hook import AtomicCheckpointHook
from .checkpoint_fits_hook import CheckpointFitsHook
from .finite_loss_hook import FiniteLossHook
from .mmcv_ops_check_hook import MMCVOpsCheckHook, check_mmcv_ops
from .progress_bar_hook import ProgressBarHook
from .random_state_hook import RandomStateHook
from .seg_label_check_hook import SegLabelCheckHook

__all__ = [
    'AtomicCheckpointHook', 'CheckpointFitsHook', 'FiniteLossHook',
    'MMCVOpsCheckHook', 'ProgressBarHook', 'RandomStateHook',
    'SegLabelCheckHook', 'check_mmcv_ops'
]
