"""Reusable layers of the PeLK models."""
from .peripheral_mixer import PeripheralMixer

__all__ = ['PeripheralMixer']
