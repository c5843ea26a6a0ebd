"""Effective receptive field of a model's backbone (the paper's Fig. 4).

Usage:
    python tools/analysis/erf.py CONFIG [CHECKPOINT] --img-dir DIR
        [--size 256] [--num-images 50] [--layer stages.3]
        [--out-dir work_dirs/erf] [--overwrite] [--cfg-options KEY=VALUE ...]

Works for any mmpretrain / mmseg / mmdet config whose model has a
``backbone`` (PeLK, mmpretrain's ConvNeXt, ...). Images are read from DIR
(recursively), resized on the short side and centre-cropped to SIZE, and
normalised with the config's data preprocessor. Without a CHECKPOINT the
model is analysed at its random initialisation. Writes
OUT_DIR/<config>_erf.png (the log-scaled heatmap), <config>_erf.npy (the raw
map) and <config>_erf.json (the high-contribution area ratios at 20, 30, 50
and 99%), and logs the ratios; files of an earlier run are replaced only with
``--overwrite``. See pelk_mm/analysis/erf.py for the method.
"""
import argparse
import json
import os
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.hub import get_config
from mmengine.logging import MMLogger
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import ProgressBar
from PIL import Image

from pelk_mm.analysis.erf import (THRESHOLDS, area_ratios,
                                  effective_receptive_field, save_heatmap)
from pelk_mm.deployment import load_model
from pelk_mm.runtime import CheckpointMismatchError, check_output

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument(
        '--img-dir',
        required=True,
        help='folder of images (searched recursively)')
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--num-images', type=int, default=50)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument(
        '--layer',
        default=None,
        help='backbone submodule analysed (default: the '
        'last of backbone.stages)')
    parser.add_argument('--out-dir', default='work_dirs/erf')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace the files of an earlier run in --out-dir')
    parser.add_argument(
        '--name',
        default=None,
        help='file name stem (default: the config name)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def find_images(img_dir: str, count: int):
    if not osp.isdir(img_dir):
        raise FileNotFoundError(
            f'--img-dir {img_dir} is not a folder; point it at images, e.g. '
            f'the val/ folder of data/imagenet_synthetic (python '
            f'tools/dataset_converters/generate_dataset.py imagenet)')
    paths = sorted(
        osp.join(root, name) for root, _, names in os.walk(img_dir)
        for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise FileNotFoundError(f'no {"/".join(IMAGE_EXTENSIONS)} images '
                                f'under {img_dir}')
    return paths[:count]


def normalisation(cfg: Config):
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get(
        'data_preprocessor') or {}
    mean = preprocessor.get('mean', [123.675, 116.28, 103.53])
    std = preprocessor.get('std', [58.395, 57.12, 57.375])
    return (torch.tensor(mean).view(1, 3, 1,
                                    1), torch.tensor(std).view(1, 3, 1, 1))


def load_image(path: str, size: int) -> torch.Tensor:
    """(3, size, size) RGB float: short side resized, centre crop."""
    image = Image.open(path).convert('RGB')
    scale = size / min(image.size)
    width, height = (max(size, round(s * scale)) for s in image.size)
    image = image.resize((width, height), Image.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()


def build_model(cfg: Config, checkpoint, logger):
    """The model of ``cfg``: at its random initialisation, or with every
    weight from ``checkpoint`` (a file that does not fit is refused: an
    ERF of a model left partly random would be reported as the trained
    one's)."""
    if checkpoint is None:
        init_default_scope(cfg.get('default_scope', 'mmengine'))
        cfg.model.get('backbone', {}).pop('init_cfg', None)
        model = MODELS.build(cfg.model)
        model.init_weights()
        logger.info('no checkpoint: analysing the random initialisation')
    else:
        model, _ = load_model(cfg, checkpoint)
    if not hasattr(model, 'backbone'):
        raise ValueError(f'{type(model).__name__} has no backbone to '
                         f'analyse')
    return model.eval()


def main():
    args = parse_args()
    logger = MMLogger.get_instance('pelk_mm', log_level='INFO')
    # 'mmpretrain::convnext/convnext-tiny_32xb128_in1k.py' names a config of
    # an installed OpenMMLab package.
    cfg = get_config(args.config) if '::' in args.config else \
        Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    paths = find_images(args.img_dir, args.num_images)
    name = args.name or osp.splitext(
        osp.basename(args.config.split('::')[-1]))[0]
    stem = osp.join(args.out_dir, f'{name}_erf')
    try:
        for suffix in ('.npy', '.png', '.json'):
            check_output(stem + suffix, (args.config, args.checkpoint),
                         args.overwrite, '--out-dir')
    except FileExistsError as err:
        raise SystemExit(f'error: {err}')
    try:
        model = build_model(cfg, args.checkpoint, logger)
    except (FileNotFoundError, RuntimeError, CheckpointMismatchError) as err:
        raise SystemExit(f'error: {err}')
    backbone = model.backbone
    layer_name = args.layer or f'stages.{len(backbone.stages) - 1}'
    layer = backbone.get_submodule(layer_name)
    mean, std = normalisation(cfg)

    progress = ProgressBar(len(paths))

    def batches():
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start:start + args.batch_size]
            images = torch.stack([load_image(p, args.size) for p in chunk])
            yield (images - mean) / std
            progress.update(len(chunk))

    erf = effective_receptive_field(backbone, layer, batches())
    ratios = area_ratios(erf, THRESHOLDS)

    os.makedirs(args.out_dir, exist_ok=True)
    np.save(stem + '.npy', erf)
    save_heatmap(erf, stem + '.png',
                 f'{name}: ERF of backbone.{layer_name} at {args.size}px')
    with open(stem + '.json', 'w') as f:
        json.dump(
            dict(
                config=args.config,
                checkpoint=args.checkpoint,
                layer=f'backbone.{layer_name}',
                size=args.size,
                images=len(paths),
                area_ratio={
                    f'{t:.0%}': r
                    for t, r in ratios.items()
                }),
            f,
            indent=2)
    logger.info(f'{name}: high-contribution area ratio ' +
                ', '.join(f't={t:.0%}: {r:.1%}' for t, r in ratios.items()) +
                f' ({len(paths)} images at {args.size}px; {stem}.png)')


if __name__ == '__main__':
    main()
