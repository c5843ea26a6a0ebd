"""Data helpers: small synthetic datasets in the real folder formats."""
from .synthetic_ade20k import SCENE_CLASSES, generate_ade20k
from .synthetic_coco import SHAPE_CLASSES, generate_coco
from .synthetic_imagenet import TEXTURE_CLASSES, generate_imagenet

__all__ = [
    'SCENE_CLASSES', 'generate_ade20k', 'SHAPE_CLASSES', 'generate_coco',
    'TEXTURE_CLASSES', 'generate_imagenet'
]
