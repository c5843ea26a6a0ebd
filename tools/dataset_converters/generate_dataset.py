"""Generate a small synthetic dataset in the real folder layout.

Usage:
    python tools/dataset_converters/generate_dataset.py {ade20k,coco,imagenet}
        [ROOT]
        [--num-train N] [--num-val N] [--height H] [--width W] [--seed S]
        [--overwrite]

ade20k writes ROOT/ADEChallengeData2016 (default ROOT data/ade_synthetic),
coco writes ROOT/annotations, ROOT/train2017, ROOT/val2017 (default ROOT
data/coco_synthetic), imagenet writes ROOT/train/<wnid>/, ROOT/val/ and
ROOT/meta/{train,val}.txt (default ROOT data/imagenet_synthetic; sizes are
per class). A complete existing dataset is kept unless
--overwrite is given. What the images contain: pelk_mm/synthetic/.
"""
import argparse

from mmengine.logging import MMLogger

from pelk_mm.tasks import TASKS

# name -> task; sizes default to its generator's.
DATASETS = {task.dataset: task for task in TASKS.values()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('dataset', choices=sorted(DATASETS))
    parser.add_argument('root', nargs='?')
    parser.add_argument('--num-train', type=int)
    parser.add_argument('--num-val', type=int)
    parser.add_argument('--height', type=int)
    parser.add_argument('--width', type=int)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args()
    task = DATASETS[args.dataset]
    generate, root = task.generate, task.default_root
    sizes = {
        k: v
        for k, v in vars(args).items()
        if k in ('num_train', 'num_val', 'height', 'width') and v is not None
    }
    data_root = generate(
        args.root or root, seed=args.seed, overwrite=args.overwrite, **sizes)
    MMLogger.get_instance(
        'pelk_mm', log_level='INFO').info(
            f'synthetic {args.dataset} ready at {data_root}')


if __name__ == '__main__':
    main()
