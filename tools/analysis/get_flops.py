"""Parameters and FLOPs of the model of any config, as the paper counts.

Usage:
    python tools/analysis/get_flops.py CONFIG [--shape H W] [--dense]
        [--cfg-options KEY=VALUE ...]

Built on mmengine.analysis (one multiply-add is one FLOP). By default the
backbone's conv and linear weights count at the paper's 40% sparsity
(density 0.6) and the peripheral convs as the dense KxK convs they equal;
--dense counts the dense model. Default input: 512x2048 for segmentation,
800x1280 for detection, 224x224 for classification.
"""
import argparse

from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger

from pelk_mm.analysis import config_complexity
from pelk_mm.models import SPARSE_DENSITY


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument(
        '--dense',
        action='store_true',
        help='count the dense model (no sparsity)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # Counting needs no weights.
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    density = 1.0 if args.dense else SPARSE_DENSITY
    params, flops = config_complexity(cfg, args.shape, density)
    MMLogger.get_instance(
        'pelk_mm', log_level='INFO').info(
            f'{args.config}: params {params / 1e6:.2f}M, FLOPs '
            f'{flops / 1e9:.1f}G ({"dense" if args.dense else "40% sparse"} '
            f'backbone; input {args.shape or "default"})')


if __name__ == '__main__':
    main()
