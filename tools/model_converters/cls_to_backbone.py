"""Turn an ImageNet classification checkpoint into a backbone checkpoint.

Usage:
    python tools/model_converters/cls_to_backbone.py CLS.pth OUT.pth [--raw]

Checkpoints written with mmengine's EMAHook (the ImageNet configs use it)
hold the EMA weights in their state_dict, and those are converted; --raw
takes the raw weights instead. Weights trained with dynamic sparsity are
masked with the masks saved beside them. The output holds only the
``backbone.*`` weights, which the segmentation and
detection configs load with
``init_cfg=dict(type='Pretrained', checkpoint=OUT.pth, prefix='backbone.')``.
An existing OUT.pth is never overwritten.
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.logging import MMLogger

from pelk_mm.engine import extract_backbone
from pelk_mm.runtime import check_output, read_checkpoint


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='classification checkpoint (path or URL)')
    parser.add_argument('dst', help='backbone checkpoint to write')
    parser.add_argument(
        '--raw',
        action='store_true',
        help='take the raw weights of an EMA checkpoint')
    parser.add_argument(
        '--overwrite', action='store_true', help='replace dst if it exists')
    args = parser.parse_args()
    try:
        check_output(args.dst, (args.src, ), args.overwrite, option='dst')
    except FileExistsError as err:
        raise SystemExit(f'error: {err}')
    try:
        state = extract_backbone(read_checkpoint(args.src, 'cpu'), args.raw)
    except (KeyError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f'error: {args.src}: {err}')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(
        {
            'state_dict': state,
            'meta': {
                'source': args.src,
                'raw': args.raw
            }
        }, args.dst)
    MMLogger.get_instance(
        'pelk_mm', log_level='INFO').info(
            f'wrote {len(state)} backbone weights to {args.dst}')


if __name__ == '__main__':
    main()
