"""Engine parts of the plugin: checkpoint loading, optimisers, hooks."""
from .checkpoint import extract_backbone
from .hooks import DynamicSparsityHook, FiniteLossHook, ProgressBarHook
from .optimizers import LayerDecayOptimWrapperConstructor
from .safe_loading import load_from_local

__all__ = [
    'extract_backbone', 'load_from_local',
    'LayerDecayOptimWrapperConstructor', 'DynamicSparsityHook',
    'FiniteLossHook', 'ProgressBarHook'
]
