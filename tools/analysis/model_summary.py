"""Build a PeLK variant and print its architecture summary and counts.

Usage:
    python tools/analysis/model_summary.py [tiny|small|base|base-101]
        [--size 224] [--no-flops]

Counts follow the paper's convention (see :class:`pelk_mm.models.PeLK`):
parameters and FLOPs of the 40%-sparse model with a 1000-class head; dense
counts are printed beside them.
"""
import argparse

import torch
from mmengine.logging import MMLogger

from pelk_mm.analysis import ImageNetClassifier, count_flops, count_params
from pelk_mm.models import SPARSE_DENSITY, PeLK


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('arch', nargs='?', default='tiny')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--no-flops', action='store_true')
    args = parser.parse_args()
    logger = MMLogger.get_instance('pelk_mm', log_level='INFO')

    model = ImageNetClassifier(args.arch).eval()
    backbone = model.backbone
    lines = [
        f'PeLK-{args.arch}: depths {backbone.depths}, '
        f'channels {backbone.channels}'
    ]
    for i, stage in enumerate(backbone.stages):
        conv = stage.blocks[0].mixer.large
        lines.append(
            f'  stage {i}: {len(stage.blocks)} blocks, kernel '
            f'{conv.kernel_size}x{conv.kernel_size} from '
            f'{len(conv.grid)}x{len(conv.grid)} weights, grid {conv.grid}, '
            f'{conv.channels}/{backbone.channels[i]} channels peripheral')
    lines.append(
        f'  params: {count_params(model, SPARSE_DENSITY) / 1e6:.1f}M at 40% '
        f'sparsity ({count_params(model) / 1e6:.1f}M dense)')
    if not args.no_flops:
        x = torch.randn(1, 3, args.size, args.size)
        sparse = count_flops(model, (x, ), SPARSE_DENSITY)
        dense = count_flops(model, (x, ))
        lines.append(f'  FLOPs at {args.size}x{args.size}: {sparse / 1e9:.2f}G'
                     f' at 40% sparsity ({dense / 1e9:.2f}G dense)')
    with torch.no_grad():
        feats = PeLK(
            args.arch, out_indices=(0, 1, 2, 3),
            gap_before_final_norm=False).eval()(
                torch.randn(1, 3, args.size, args.size))
    lines.append('  feature maps: ' +
                 ', '.join(str(tuple(f.shape)) for f in feats))
    logger.info('\n'.join(lines))


if __name__ == '__main__':
    main()
