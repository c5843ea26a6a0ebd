"""Generate a small synthetic ADE20K in the real folder layout.

Usage:
    python tools/dataset_converters/generate_ade20k.py [ROOT]
        [--num-train 200] [--num-val 50] [--seed 0] [--overwrite]

Writes ROOT/ADEChallengeData2016 (default ROOT: data/ade_synthetic); an
existing complete dataset is left as it is unless --overwrite is given.
See pelk_mm/datasets/synthetic_ade20k.py for what the scenes contain.
"""
import argparse

from mmengine.logging import MMLogger

from pelk_mm.datasets import generate_ade20k


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', nargs='?', default='data/ade_synthetic')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--height', type=int, default=128)
    parser.add_argument('--width', type=int, default=160)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args()
    data_root = generate_ade20k(args.root, args.num_train, args.num_val,
                                args.height, args.width, args.seed,
                                args.overwrite)
    MMLogger.get_instance('pelk_mm', log_level='INFO').info(
        f'synthetic ADE20K ready at {data_root}')


if __name__ == '__main__':
    main()
