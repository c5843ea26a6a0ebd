"""Export a PeLK classifier, segmentor or detector to ONNX.

Usage:
    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --out FILE
        [--shape H W] [--batch B] [--dynamic] [--verify]
        [--path direct|box_sums|fft] [--cfg-options KEY=VALUE ...]

The graph takes images as float32 (B, 3, H, W) in the channel order the
model's data preprocessor hands the network (RGB for every config here),
0-255, not normalised: the mean/std normalisation is part of the graph. It
gives, by the kind of model in CONFIG:

* a classifier (mmpretrain): the logits, (B, num_classes);
* a segmentor (mmseg): the segmentation logits at the input size,
  (B, num_classes, H, W), from whole-image inference (a config's sliding
  window is not exported; tile outside the graph if you need it);
* a detector (mmdet): the neck's features (for Cascade Mask R-CNN the five
  FPN levels); the heads stay in PyTorch (see README "Deployment": mmdeploy
  1.3.1 does not export them with torch 2.12).

The backbone is re-parameterised first (``switch_to_deploy``) unless the
config already builds it so (``model.backbone.deploy=True``, for a
checkpoint written by tools/model_converters/reparameterize.py); its
peripheral convs take ``--path`` (see :mod:`pelk_mm.deployment`). What
the graph of each task is:
:mod:`pelk_mm.tasks`.
``--dynamic`` makes batch, height and width dynamic axes. ``--verify`` runs
the file in onnxruntime and the model in PyTorch on the same random images
(and, with ``--dynamic``, on a second batch size and shape), prints the
largest absolute and relative differences, and fails above ``--rtol``.
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

from pelk_mm.deployment import (DEFAULT_EXPORT_PATH, EXPORT_PATHS,
                                compare_with_pytorch, export_onnx, export_path,
                                load_model, require)
from pelk_mm.models import PeLK
from pelk_mm.runtime import CheckpointMismatchError, check_output
from pelk_mm.tasks import task_of

# PeLK's feature maps halve five times; every size must divide by this.
STRIDE = 32


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace the output file if it exists')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='input size (multiples of 32); default: the config\'s '
        'crop_size, or 224 x 224')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument(
        '--dynamic',
        action='store_true',
        help='dynamic batch, height and width axes')
    parser.add_argument(
        '--path',
        choices=EXPORT_PATHS,
        default=DEFAULT_EXPORT_PATH,
        help='what each peripheral conv becomes (default: %(default)s)')
    parser.add_argument(
        '--verify',
        action='store_true',
        help='compare onnxruntime with PyTorch on random images')
    parser.add_argument(
        '--rtol',
        type=float,
        default=1e-4,
        help='largest relative difference --verify accepts')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def input_shape(args, cfg: Config) -> tuple:
    height, width = args.shape or cfg.get('crop_size', (224, 224))
    if height < STRIDE or width < STRIDE or height % STRIDE or \
            width % STRIDE:
        raise SystemExit(
            f'error: --shape {height} {width}: PeLK halves its maps five '
            f'times, so height and width must be positive multiples of '
            f'{STRIDE} (e.g. {max(STRIDE, height // STRIDE * STRIDE)} '
            f'{max(STRIDE, width // STRIDE * STRIDE)}); pad the images to '
            f'that')
    if args.batch < 1:
        raise SystemExit(f'error: --batch must be >= 1, got {args.batch}')
    return height, width


def main():
    args = parse_args()
    logger = MMLogger.get_instance('pelk_mm', log_level='INFO')
    args.path = export_path(args.path)
    if args.dynamic and args.path == 'fft':
        raise SystemExit(
            "error: --path fft takes static shapes only (the FFT lengths "
            "are chosen from the map size at export); drop --dynamic or "
            "choose --path direct or box_sums")
    needed = ['onnx', 'onnxscript'] + (['onnxruntime'] if args.verify else [])
    try:
        for module in needed:
            require(module)
    except ImportError as error:
        raise SystemExit(f'error: {error}')
    try:
        check_output(args.out, (args.config, args.checkpoint), args.overwrite)
    except FileExistsError as err:
        raise SystemExit(f'error: {err}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    height, width = input_shape(args, cfg)
    try:
        model, _ = load_model(cfg, args.checkpoint)
    except (FileNotFoundError, RuntimeError, CheckpointMismatchError) as err:
        raise SystemExit(f'error: {err}')
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, PeLK) and not backbone.deploy:
        backbone.switch_to_deploy()
    try:
        graph = task_of(cfg.get('default_scope',
                                'mmengine')).export_graph(model)
    except ValueError as err:
        raise SystemExit(f'error: {err}')
    graph.eval()
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, height, width) * 255
    export_onnx(graph, images, args.out, args.path, args.dynamic,
                graph.outputs)
    logger.info(f'wrote {args.out} ({osp.getsize(args.out) / 2**20:.1f} MB; '
                f'{type(model).__name__}, outputs {", ".join(graph.outputs)}'
                f', {args.batch}x3x{height}x{width}'
                f'{" with dynamic batch/height/width" if args.dynamic else ""}'
                f', path {args.path})')
    if not args.verify:
        return
    checks = [images]
    if args.dynamic:
        checks.append(
            torch.rand(args.batch + 1, 3, height + STRIDE, width + 2 * STRIDE)
            * 255)
    worst = 0.0
    for x in checks:
        errors = compare_with_pytorch(args.out, graph, x)
        for name, error in errors.items():
            logger.info(f'verify {tuple(x.shape)} {name}: max abs '
                        f'{error["max_abs"]:.3e}, max rel '
                        f'{error["max_rel"]:.3e}')
            worst = max(worst, error['max_rel'])
    if worst > args.rtol:
        logger.error(f'onnxruntime differs from PyTorch by {worst:.3e} '
                     f'(relative), over --rtol {args.rtol}')
        sys.exit(1)
    logger.info(f'verified: onnxruntime matches PyTorch within {worst:.1e} '
                f'(relative to the largest output)')


if __name__ == '__main__':
    main()
