"""A small synthetic ImageNet in the folder layout mmpretrain reads.

Layout, as mmpretrain's ``ImageNet(data_root, split=...)`` reads it::

    ROOT/train/<wnid>/<wnid>_<i>.JPEG
    ROOT/val/ILSVRC2012_val_<i>.JPEG
    ROOT/meta/train.txt   ("<wnid>/<file> <label>" lines)
    ROOT/meta/val.txt     ("<file> <label>" lines)

Each class is a texture family (stripes at an orientation, checks, rings,
dots...) blending a colour of the class's hue (jittered) with a random one,
at random periods and phases, with noise: pattern and palette both tell the
class, so a small model learns it in a few hundred CPU iterations (with
fully random colours, ConvNeXt-style models need thousands). Deterministic
from the seed.
"""
import colorsys
import os
import os.path as osp

import numpy as np
from mmengine.utils import ProgressBar
from PIL import Image

# (wnid, pattern) of the classes, in label order.
TEXTURE_CLASSES = [
    ('n00000001', 'horizontal'),
    ('n00000002', 'vertical'),
    ('n00000003', 'diagonal'),
    ('n00000004', 'checks'),
    ('n00000005', 'rings'),
    ('n00000006', 'dots'),
]


def class_colour(label: int, rng: np.random.RandomState) -> np.ndarray:
    """An RGB colour (0-255) of the class's hue, jittered."""
    hue = (label / len(TEXTURE_CLASSES) + rng.uniform(-0.05, 0.05)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0),
                              rng.uniform(0.6, 1.0))
    return np.array(rgb, dtype=np.float32) * 255


def make_texture(pattern: str,
                 rng: np.random.RandomState,
                 size: int,
                 label: int = 0) -> np.ndarray:
    """One (size, size, 3) uint8 image of the pattern of class ``label``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(5, 10)
    phase = rng.uniform(0, 2 * np.pi)
    if pattern == 'horizontal':
        wave = np.sin(yy * 2 * np.pi / period + phase)
    elif pattern == 'vertical':
        wave = np.sin(xx * 2 * np.pi / period + phase)
    elif pattern == 'diagonal':
        wave = np.sin((xx + yy) * np.pi / period + phase)
    elif pattern == 'checks':
        wave = np.sign(
            np.sin(xx * 2 * np.pi / period + phase) *
            np.sin(yy * 2 * np.pi / period))
    elif pattern == 'rings':
        cx, cy = rng.uniform(0.3, 0.7, 2) * size
        wave = np.sin(np.hypot(xx - cx, yy - cy) * 2 * np.pi / period)
    else:  # dots
        wave = (np.sin(xx * 2 * np.pi / period + phase) *
                np.sin(yy * 2 * np.pi / period) > 0.5) * 2.0 - 1
    weight = 0.5 + 0.5 * wave[..., None]  # blend two random colours
    a = class_colour(label, rng)
    b = rng.randint(0, 256, 3).astype(np.float32)
    image = weight * a + (1 - weight) * b + rng.normal(0, 12, weight.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def generate_imagenet(root: str,
                      num_train: int = 100,
                      num_val: int = 20,
                      height: int = 64,
                      width: int = 64,
                      seed: int = 0,
                      overwrite: bool = False) -> str:
    """Write the dataset under ``root`` and return ``root``.

    Args:
        root (str): Dataset root (e.g. ``data/imagenet_synthetic``).
        num_train (int): Training images per class. Defaults to 100.
        num_val (int): Validation images per class. Defaults to 20.
        height (int): Image side (images are square; ``width`` is accepted
            for a uniform interface and must equal it). Defaults to 64.
        width (int): See ``height``.
        seed (int): Random seed; the same seed gives the same files.
        overwrite (bool): Rewrite a complete dataset. Defaults to False.
    """
    if height != width:
        raise ValueError('synthetic ImageNet images are square: height '
                         f'({height}) must equal width ({width})')
    for split, count, split_seed in (('train', num_train, seed),
                                     ('val', num_val, seed + 1)):
        meta = osp.join(root, 'meta', f'{split}.txt')
        if not overwrite and osp.isfile(meta):
            continue
        rng = np.random.RandomState(split_seed)
        lines = []
        progress = ProgressBar(count * len(TEXTURE_CLASSES))
        for index in range(count):
            for label, (wnid, pattern) in enumerate(TEXTURE_CLASSES):
                if split == 'train':
                    name = osp.join(wnid, f'{wnid}_{index + 1}.JPEG')
                else:
                    number = index * len(TEXTURE_CLASSES) + label + 1
                    name = f'ILSVRC2012_val_{number:08d}.JPEG'
                path = osp.join(root, split, name)
                os.makedirs(osp.dirname(path), exist_ok=True)
                Image.fromarray(make_texture(pattern, rng, height,
                                             label)).save(
                                                 path,
                                                 format='JPEG',
                                                 quality=95)
                lines.append(f'{name} {label}')
                progress.update()
        os.makedirs(osp.dirname(meta), exist_ok=True)
        with open(meta, 'w') as f:  # last: marks the split complete
            f.write('\n'.join(lines) + '\n')
    return root
