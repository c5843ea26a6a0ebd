"""Engine parts of the plugin: checkpoint loading, optimisers, hooks."""
from .checkpoint import extract_backbone
from .hooks import (AtomicCheckpointHook, CheckpointFitsHook,
                    CheckpointMismatchError, DynamicSparsityHook,
                    FiniteLossHook, ProgressBarHook, RandomStateHook,
                    SegLabelCheckHook)
from .optimizers import LayerDecayOptimWrapperConstructor
from .resume import find_resumable_checkpoint
from .safe_loading import load_from_local

__all__ = [
    'extract_backbone', 'load_from_local', 'find_resumable_checkpoint',
    'AtomicCheckpointHook', 'CheckpointFitsHook', 'CheckpointMismatchError',
    'LayerDecayOptimWrapperConstructor', 'DynamicSparsityHook',
    'FiniteLossHook', 'ProgressBarHook', 'RandomStateHook', 'SegLabelCheckHook'
]
