"""The PeLK models: the backbone, its layers, and which weights are sparse."""
from .backbones import PeLK
from .layers import PeripheralMixer
from .sparsity import SPARSE_DENSITY, holds_sparse_weight, sparse_weights

__all__ = [
    'PeLK', 'PeripheralMixer', 'SPARSE_DENSITY', 'holds_sparse_weight',
    'sparse_weights'
]
