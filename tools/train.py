"""Train any config in configs/ (segmentation, detection, classification).

A thin wrapper over mmengine's Runner, with the usual OpenMMLab flags:

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--force]
        [--amp] [--auto-scale-lr] [--allow-missing]
        [--cfg-options KEY=VALUE ...]
        [--launcher none|pytorch|slurm|mpi]

It is not required: the same configs train with mmseg's, mmdet's or
mmpretrain's own tools/train.py, because they import pelk_mm through
``custom_imports``. What this wrapper adds: it checks the pretrained
checkpoint and the dataset folders before anything is built, it refuses
to start a new run over the checkpoints of an earlier one or from a
``load_from`` checkpoint that does not fit the model, and it runs
on machines without a GPU (SyncBN becomes BN; distributed runs use gloo).
"""
import argparse
import glob
import os
import os.path as osp

from mmengine.logging import print_log

from pelk_mm.runtime import (CheckpointMismatchError,
                             find_resumable_checkpoint, lock_work_dir,
                             set_aside_earlier_run)
from launch import (add_common_args, add_fit_check_args, build_runner,
                    check_fit, load_config, run_main, setup_device)
from preflight import (check_data_roots, missing_pretrained,
                       missing_pretrained_message)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or, without a value, from '
        'the latest checkpoint in the work dir')
    parser.add_argument(
        '--force',
        action='store_true',
        help='start a new run even if the work dir holds checkpoints of an '
        'earlier one (they are moved into WORK_DIR/earlier_run_<time>/)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision (needs a GPU)')
    add_fit_check_args(parser, 'fine-tune', 'the `load_from` checkpoint')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate linearly from the config\'s '
        'auto_scale_lr.base_batch_size to the total batch size of this run')
    add_common_args(parser)
    return parser.parse_args()


def is_first_process() -> bool:
    """Whether this is the run's first process (rank 0, as torchrun or
    Slurm number them), before the distributed setup exists."""
    return os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0')) == '0'


def hold(work_dir: str) -> None:
    """This run's hold on its work dir (a second run into it is refused)."""
    try:
        lock_work_dir(work_dir)
    except RuntimeError as err:
        raise SystemExit(f'error: {err}')


def check_work_dir(work_dir: str) -> None:
    """Refuse a new run into a work dir that holds an earlier run's
    checkpoints: mmengine would overwrite them one by one."""
    found = sorted(glob.glob(osp.join(work_dir, '*.pth')))
    if found:
        raise SystemExit(
            f'error: the work dir {work_dir} already holds checkpoints of an '
            f'earlier run ({", ".join(osp.basename(f) for f in found[:3])}'
            f'{", ..." if len(found) > 3 else ""}). Pass --resume to go on '
            f'with that run, --work-dir NEW_DIR to start a new one beside it, '
            f'or --force to start over in this one.')


def main():
    args = parse_args()
    cfg = load_config(args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise SystemExit(
                'error: --auto-scale-lr needs auto_scale_lr = dict('
                'base_batch_size=N) in the config: the total batch size its '
                'learning rate is for.')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        # The newest readable checkpoint (skipping, with a warning, one that
        # a killed write left unreadable); none: a new run.
        cfg.resume = True
        cfg.load_from = find_resumable_checkpoint(cfg.work_dir)
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume

    # Fail before any model or dataset is built, saying what to do.
    if not cfg.get('resume', False):
        if not args.force:
            check_work_dir(cfg.work_dir)
        elif is_first_process() and osp.isdir(cfg.work_dir):
            hold(cfg.work_dir)  # before moving anything of it
            kept = set_aside_earlier_run(cfg.work_dir)
            if kept:
                print_log(
                    f'--force: moved the earlier run\'s checkpoints to '
                    f'{kept} ({", ".join(sorted(os.listdir(kept)))})',
                    logger='current')
    setup_device(cfg, amp=args.amp)
    missing = missing_pretrained(cfg.model)
    if missing:
        raise SystemExit(f'error: {missing_pretrained_message(missing[0])}')
    try:
        check_data_roots(cfg, ('train_dataloader', 'val_dataloader'))
    except FileNotFoundError as err:
        raise SystemExit(f'error: {err}')
    if is_first_process():
        hold(cfg.work_dir)

    runner = build_runner(cfg)
    if cfg.get('load_from') and not cfg.get('resume'):
        check_fit(
            runner, cfg.load_from, args, 'Check `load_from`, or pass '
            '--allow-missing to fine-tune from it anyway.')
    print_log(f'work dir: {cfg.work_dir}', logger='current')
    try:
        runner.train()
    except CheckpointMismatchError as err:
        raise SystemExit(f'error: {err}')
    except ValueError as err:
        if not (cfg.get('resume') and 'parameter group' in str(err)):
            raise
        # torch's optimizer.load_state_dict, on resuming another model.
        source = cfg.get('load_from') or 'the latest checkpoint'
        raise SystemExit(
            f'error: cannot resume from {source}: it was saved by '
            f'a run of another model or optimizer settings ({err}). Resume '
            f'with the config that run used (the .py file saved in its work '
            f'dir), or start a new run from its weights with '
            f'--cfg-options load_from=CHECKPOINT.') from None


if __name__ == '__main__':
    run_main(main)
