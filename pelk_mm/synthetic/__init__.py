"""Generators of small synthetic datasets in the real folder formats
(ADE20K, COCO, ImageNet): what the demos train on and the tests use, since
the real datasets cannot be downloaded everywhere."""
from .ade20k import SCENE_CLASSES, generate_ade20k
from .coco import SHAPE_CLASSES, generate_coco
from .imagenet import TEXTURE_CLASSES, generate_imagenet

__all__ = [
    'SCENE_CLASSES', 'generate_ade20k', 'SHAPE_CLASSES', 'generate_coco',
    'TEXTURE_CLASSES', 'generate_imagenet'
]
