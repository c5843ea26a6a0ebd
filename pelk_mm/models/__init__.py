"""The PeLK models: the backbone, its layers, and which weights are sparse."""
from .backbones import PeLK
from .layers import PeripheralMixer
from .sparsity import SPARSE_DENSITY, is_sparse_weight

__all__ = ['PeLK', 'PeripheralMixer', 'SPARSE_DENSITY', 'is_sparse_weight']
