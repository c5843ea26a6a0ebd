"""Write the inference form of a trained PeLK model's checkpoint.

Usage:
    python tools/model_converters/reparameterize.py CONFIG CHECKPOINT OUT
        [--cfg-options KEY=VALUE ...]

Builds the model of CONFIG (a classifier, segmentor or detector with a PeLK
backbone), loads CHECKPOINT, and folds each mixer's BNs and 5x5 branch into
its peripheral conv and freezes the positional term
(``PeLK.switch_to_deploy``). OUT holds the whole model in that form (and
CHECKPOINT's meta, e.g. the class names); build it with
``model.backbone.deploy=True``:

    python tools/test.py CONFIG OUT --cfg-options model.backbone.deploy=True

The backbone's outputs before and after are compared on a random input, and
the largest difference is logged. An existing OUT is never overwritten.
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

from pelk_mm.deployment import load_model
from pelk_mm.models import PeLK
from pelk_mm.runtime import CheckpointMismatchError, check_output


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='checkpoint to write')
    parser.add_argument(
        '--size',
        type=int,
        default=224,
        help='side of the random input the outputs are compared on')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace the output file if it exists')
    return parser.parse_args()


def main():
    args = parse_args()
    logger = MMLogger.get_instance('pelk_mm', log_level='INFO')
    try:
        check_output(args.out, (args.config, args.checkpoint), args.overwrite)
    except FileExistsError as err:
        raise SystemExit(f'error: {err}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.model.get('backbone', {}).get('deploy', False):
        raise SystemExit('error: the config builds the backbone deployed '
                         '(model.backbone.deploy=True); give the config the '
                         'checkpoint was trained with')
    try:
        model, checkpoint = load_model(cfg, args.checkpoint)
    except (FileNotFoundError, RuntimeError, CheckpointMismatchError) as err:
        raise SystemExit(f'error: {err}')
    if not isinstance(getattr(model, 'backbone', None), PeLK):
        raise SystemExit(
            f'error: the model of {cfg.filename} has no PeLK backbone '
            f'(model.backbone is '
            f'{type(getattr(model, "backbone", None)).__name__}); only '
            f'PeLK has an inference form to switch to')
    state = checkpoint.get('state_dict', checkpoint)
    model.eval()
    backbone = model.backbone
    x = torch.randn(1, backbone.in_channels, args.size, args.size)
    with torch.no_grad():
        before = backbone(x)
        backbone.switch_to_deploy()
        after = backbone(x)
    error = max(((b - a).abs().max() / b.abs().max()).item()
                for b, a in zip(before, after))

    meta = dict(checkpoint.get('meta', {}))
    meta['reparameterized_from'] = args.checkpoint
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save({'state_dict': model.state_dict(), 'meta': meta}, args.out)
    logger.info(
        f'wrote the deployed model to {args.out} ({len(state)} -> '
        f'{len(model.state_dict())} entries); backbone outputs on a random '
        f'{args.size}x{args.size} input differ by at most {error:.1e} '
        f'(relative to the largest). Load it with '
        f'--cfg-options model.backbone.deploy=True')


if __name__ == '__main__':
    main()
