"""A small synthetic COCO (instance segmentation) in the real layout.

Layout, as mmdet's ``CocoDataset`` and pycocotools read it::

    ROOT/annotations/instances_train2017.json, instances_val2017.json
    ROOT/train2017/000000000001.jpg, ...
    ROOT/val2017/000000000001.jpg, ...

Each image holds 1-4 objects of :data:`SHAPE_CLASSES` (filled, coloured and
jittered) on a textured background; every object is annotated with its
polygon, its box ``[x, y, w, h]`` and its area, as COCO does. Deterministic
from the seed.
"""
import json
import os
import os.path as osp
from typing import List, Tuple

import numpy as np
from mmengine.utils import ProgressBar
from PIL import Image, ImageDraw

# category id -> (name, base RGB colour)
SHAPE_CLASSES = {
    1: ('disc', (220, 60, 50)),
    2: ('square', (50, 90, 220)),
    3: ('triangle', (240, 200, 40))
}


def _polygon(class_id: int, cx: float, cy: float, r: float,
             rng: np.random.RandomState) -> List[Tuple[float, float]]:
    if class_id == 1:  # a disc as a 24-gon
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]
    if class_id == 2:  # a rotated square
        angles = np.pi / 4 + rng.uniform(0, np.pi / 2) + np.arange(4) * \
            np.pi / 2
    else:  # a rotated triangle
        angles = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]


def make_image(rng: np.random.RandomState, height: int, width: int):
    """An image (H, W, 3) uint8 and its objects [(category, polygon)]."""
    base = rng.randint(60, 200, 3).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    stripes = 0.85 + 0.15 * np.sin(xx / rng.uniform(3, 9) +
                                   yy / rng.uniform(3, 9))
    image = stripes[..., None] * base + rng.normal(0, 8, (height, width, 3))
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    objects, discs = [], []
    for _ in range(rng.randint(1, 5)):
        class_id = int(rng.randint(1, 4))
        r = rng.uniform(0.15, 0.3) * min(height, width)
        cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
        if any(np.hypot(cx - x, cy - y) < r + q for x, y, q in discs):
            continue  # objects do not overlap, so polygons are exact masks
        discs.append((cx, cy, r))
        polygon = _polygon(class_id, cx, cy, r, rng)
        color = np.clip(
            np.asarray(SHAPE_CLASSES[class_id][1]) + rng.randint(-25, 26, 3),
            0, 255)
        draw.polygon(polygon, fill=tuple(int(c) for c in color))
        objects.append((class_id, polygon))
    return np.asarray(canvas), objects


def _annotation(ann_id: int, image_id: int, class_id: int, polygon,
                height: int, width: int) -> dict:
    points = np.clip(np.asarray(polygon), 0, [width - 1, height - 1])
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    x, y = points[:, 0], points[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=class_id,
        segmentation=[[round(float(v), 2) for v in points.ravel()]],
        bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
        area=round(float(area), 2),
        iscrowd=0)


def generate_coco(root: str,
                  num_train: int = 120,
                  num_val: int = 30,
                  height: int = 120,
                  width: int = 150,
                  seed: int = 0,
                  overwrite: bool = False) -> str:
    """Write the synthetic dataset under ``root`` and return ``root``.

    Args:
        root (str): Dataset root (e.g. ``data/coco_synthetic``).
        num_train (int): Training images. Defaults to 120.
        num_val (int): Validation images. Defaults to 30.
        height (int): Image height. Defaults to 120.
        width (int): Image width. Defaults to 150. Neither is a multiple of
            32, as in real COCO: the data preprocessor pads.
        seed (int): Random seed; the same seed gives the same files.
        overwrite (bool): Rewrite a complete dataset. Defaults to False.
    """
    categories = [
        dict(id=i, name=name, supercategory='shape')
        for i, (name, _) in SHAPE_CLASSES.items()
    ]
    for split, count, split_seed in (('train2017', num_train, seed),
                                     ('val2017', num_val, seed + 1)):
        ann_file = osp.join(root, 'annotations', f'instances_{split}.json')
        if not overwrite and osp.isfile(ann_file):
            continue
        os.makedirs(osp.join(root, split), exist_ok=True)
        os.makedirs(osp.dirname(ann_file), exist_ok=True)
        rng = np.random.RandomState(split_seed)
        images, annotations = [], []
        progress = ProgressBar(count)
        for image_id in range(1, count + 1):
            image, objects = make_image(rng, height, width)
            file_name = f'{image_id:012d}.jpg'
            Image.fromarray(image).save(
                osp.join(root, split, file_name), quality=95)
            images.append(
                dict(
                    id=image_id,
                    file_name=file_name,
                    height=height,
                    width=width))
            for class_id, polygon in objects:
                annotations.append(
                    _annotation(
                        len(annotations) + 1, image_id, class_id, polygon,
                        height, width))
            progress.update()
        # The annotation file last: its presence marks a complete split.
        with open(ann_file, 'w') as f:
            json.dump(
                dict(
                    images=images,
                    annotations=annotations,
                    categories=categories), f)
    return root
