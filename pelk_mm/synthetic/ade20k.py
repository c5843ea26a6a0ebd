"""A small synthetic ADE20K in the real folder layout.

Layout, as mmseg's ``ADE20KDataset`` reads it::

    ROOT/ADEChallengeData2016/
        images/training/ADE_train_00000001.jpg, ...
        images/validation/ADE_val_00000001.jpg, ...
        annotations/training/ADE_train_00000001.png, ...   (uint8 labels)
        annotations/validation/ADE_val_00000001.png, ...

Annotations encode classes as ADE20K does: 0 is "other" (ignored; mmseg's
``reduce_zero_label`` maps it to 255) and 1..150 are the 150 classes. The
scenes use a handful of them (:data:`SCENE_CLASSES`): sky above a horizon,
floor or road below, walls, buildings, trees, people and cars as textured
shapes, plus unlabelled clutter. Colour alone does not separate every class
(floor and road share hues, buildings and walls too): texture and shape do.
Everything is deterministic from the seed.
"""
import os
import os.path as osp
from typing import Dict, Tuple

import numpy as np
from mmengine.utils import ProgressBar
from PIL import Image, ImageDraw

# ADE20K label id -> (name, base RGB colour, texture)
SCENE_CLASSES: Dict[int, Tuple[str, Tuple[int, int, int], str]] = {
    1: ('wall', (170, 160, 140), 'flat'),
    2: ('building', (150, 130, 110), 'windows'),
    3: ('sky', (110, 160, 230), 'gradient'),
    4: ('floor', (140, 100, 60), 'planks'),
    5: ('tree', (40, 120, 40), 'blotches'),
    7: ('road', (110, 100, 90), 'speckle'),
    13: ('person', (200, 80, 160), 'flat'),
    21: ('car', (200, 40, 40), 'shine'),
}


def _texture(kind: str, color, height: int, width: int,
             rng: np.random.RandomState) -> np.ndarray:
    color = np.clip(
        np.asarray(color, np.float32) + rng.uniform(-20, 20, 3), 0, 255)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = np.ones((height, width), np.float32)
    if kind == 'gradient':
        shade = 0.75 + 0.45 * yy / max(height - 1, 1)
    elif kind == 'planks':
        period = rng.randint(6, 10)
        shade = 0.8 + 0.35 * ((yy // period) % 2)
    elif kind == 'windows':
        shade = np.where(((yy % 8) < 4) & ((xx % 8) < 4), 0.55, 1.1)
    elif kind == 'blotches':
        shade = 0.8 + 0.4 * (
            np.sin(xx / 2.3 + rng.rand() * 6) * np.cos(yy / 1.7) > 0.2)
    elif kind == 'speckle':
        shade = 0.85 + 0.3 * (rng.rand(height, width) > 0.7)
    elif kind == 'shine':
        shade = 0.9 + 0.3 * np.exp(-((yy % 12) - 3)**2 / 4.0)
    noise = rng.normal(0, 6, (height, width, 3))
    return np.clip(shade[..., None] * color + noise, 0, 255)


def _shape_mask(kind: str, height: int, width: int, box) -> np.ndarray:
    canvas = Image.new('L', (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == 'ellipse':
        draw.ellipse(box, fill=1)
    elif kind == 'triangle':
        x0, y0, x1, y1 = box
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=1)
    else:
        draw.rectangle(box, fill=1)
    return np.asarray(canvas, dtype=bool)


def _paint(image, label, mask, class_id, rng):
    _, color, texture = SCENE_CLASSES[class_id] if class_id else (
        'other', tuple(rng.randint(0, 256, 3)), 'speckle')
    image[mask] = _texture(texture, color, *label.shape, rng)[mask]
    label[mask] = class_id


def make_scene(rng: np.random.RandomState,
               height: int = 128,
               width: int = 160) -> Tuple[np.ndarray, np.ndarray]:
    """One RGB image (H, W, 3) uint8 and its ADE20K label map (H, W)."""
    image = np.zeros((height, width, 3), np.float32)
    label = np.zeros((height, width), np.uint8)
    horizon = rng.randint(int(0.3 * height), int(0.55 * height))
    full = np.ones((height, width), bool)
    sky = full.copy()
    sky[horizon:] = False
    _paint(image, label, sky, 3, rng)
    _paint(image, label, ~sky, 4 if rng.rand() < 0.5 else 7, rng)
    if rng.rand() < 0.5:  # a wall across part of the background
        x0 = rng.randint(0, width // 2)
        box = (x0, rng.randint(0, horizon // 2),
               x0 + rng.randint(width // 4, width // 2),
               horizon + rng.randint(0, height // 6))
        _paint(image, label, _shape_mask('rect', height, width, box), 1, rng)
    objects = [(2, 'rect'), (5, 'ellipse'), (13, 'ellipse'), (21, 'rect'),
               (0, 'triangle')]
    for _ in range(rng.randint(2, 6)):
        class_id, shape = objects[rng.randint(len(objects))]
        w = rng.randint(width // 8, width // 3)
        h = {
            2: rng.randint(height // 3, height // 2 + 10),
            13: 2 * w,
            21: w // 2
        }.get(class_id, w)
        x0 = rng.randint(-w // 4, width - 3 * w // 4)
        y1 = horizon + rng.randint(0, height - horizon) if class_id in (
            13, 21) else horizon + rng.randint(0, height // 8)
        box = (x0, y1 - h, x0 + w, y1)
        _paint(image, label, _shape_mask(shape, height, width, box), class_id,
               rng)
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate_ade20k(root: str,
                    num_train: int = 200,
                    num_val: int = 50,
                    height: int = 128,
                    width: int = 160,
                    seed: int = 0,
                    overwrite: bool = False) -> str:
    """Write the synthetic dataset under ``root/ADEChallengeData2016``.

    Args:
        root (str): Parent folder (e.g. ``data/ade_synthetic``).
        num_train (int): Training images. Defaults to 200.
        num_val (int): Validation images. Defaults to 50.
        height (int): Image height. Defaults to 128.
        width (int): Image width. Defaults to 160.
        seed (int): Random seed; the same seed gives the same files.
        overwrite (bool): Rewrite a complete dataset. Defaults to False.

    Returns:
        str: The dataset root, ``root/ADEChallengeData2016``.
    """
    data_root = osp.join(root, 'ADEChallengeData2016')
    splits = (('training', 'ADE_train', num_train, seed),
              ('validation', 'ADE_val', num_val, seed + 1))
    for split, stem, count, split_seed in splits:
        img_dir = osp.join(data_root, 'images', split)
        ann_dir = osp.join(data_root, 'annotations', split)
        names = [f'{stem}_{i:08d}' for i in range(1, count + 1)]
        if not overwrite and all(
                osp.isfile(osp.join(img_dir, n + '.jpg'))
                and osp.isfile(osp.join(ann_dir, n + '.png')) for n in names):
            continue
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        rng = np.random.RandomState(split_seed)
        progress = ProgressBar(count)
        for name in names:
            image, label = make_scene(rng, height, width)
            Image.fromarray(image).save(
                osp.join(img_dir, name + '.jpg'), quality=95)
            Image.fromarray(label).save(osp.join(ann_dir, name + '.png'))
            progress.update()
    return data_root
