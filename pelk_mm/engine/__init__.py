"""Engine parts of the plugin: checkpoint loading and optimisers."""
from .checkpoint import load_local_checkpoint
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = ['load_local_checkpoint', 'LayerDecayOptimWrapperConstructor']
