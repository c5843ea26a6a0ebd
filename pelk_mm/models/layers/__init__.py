"""Reusable layers of the PeLK models."""
from .layer_norm import LayerNorm2d
from .peripheral_mixer import PeripheralMixer

__all__ = ['LayerNorm2d', 'PeripheralMixer']
