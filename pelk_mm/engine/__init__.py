"""Engine parts of the plugin: checkpoint loading, optimisers, hooks."""
from .checkpoint import extract_backbone, load_from_local
from .hooks import DynamicSparsityHook, ProgressBarHook
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = [
    'extract_backbone', 'load_from_local',
    'LayerDecayOptimWrapperConstructor', 'DynamicSparsityHook',
    'ProgressBarHook'
]
