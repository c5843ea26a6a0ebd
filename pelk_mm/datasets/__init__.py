"""Data helpers: small synthetic datasets in the real folder formats."""
from .synthetic_ade20k import SCENE_CLASSES, generate_ade20k

__all__ = ['SCENE_CLASSES', 'generate_ade20k']
