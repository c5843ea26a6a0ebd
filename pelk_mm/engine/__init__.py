"""The engine parts of PeLK's method: SLaK's dynamic sparsity (a hook over
the pure-torch mask algebra of :mod:`.sparse_masks`), the layer-wise
learning-rate decay constructor, and the classifier -> backbone
conversion that applies the sparsity masks. What any run needs beyond the
method is :mod:`pelk_mm.runtime`."""
from .checkpoint import extract_backbone
from .hooks import DynamicSparsityHook
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = [
    'extract_backbone', 'DynamicSparsityHook',
    'LayerDecayOptimWrapperConstructor'
]
