"""Evaluate a checkpoint with any config in configs/.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
        [--tta] [--allow-missing] [--cfg-options KEY=VALUE ...]
        [--launcher ...]

A thin wrapper over mmengine's Runner; the same configs also run with the
OpenMMLab codebases' own tools/test.py. ``--show-dir`` writes pictures of the
predictions (drawn by the codebase's visualizer) beside the inputs;
``--tta`` runs the config's test-time augmentation (for ADE20K: multi-scale
+ flip, the mIoU(ms+flip) column). A checkpoint that leaves parameters of
the model without weights (another architecture, renamed keys, a backbone
file) is refused instead of evaluated at random init, unless
``--allow-missing``.
"""
import argparse
import os.path as osp

from mmengine.config import Config

from pelk_mm.runtime import CheckpointMismatchError
from pelk_mm.tasks import task_of
from launch import (add_common_args, add_fit_check_args, build_runner,
                    check_fit, load_config, run_main, setup_device)
from preflight import check_data_roots


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint', help='checkpoint file, or its URL (http(s)://...)')
    parser.add_argument('--show-dir', help='the dir to save drawn predictions')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation from the config')
    add_fit_check_args(parser, 'evaluate', 'the checkpoint')
    add_common_args(parser)
    return parser.parse_args()


def enable_visualization(cfg: Config, show_dir: str) -> None:
    """Make the codebase's visualization hook draw every test image."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise SystemExit('error: --show-dir needs a `visualization` hook in '
                         'default_hooks, and this config has none')
    hook.update(draw=True, interval=1)
    if task_of(cfg.get('default_scope', 'mmengine')).show_dir_in_hook:
        hook['test_out_dir'] = show_dir  # relative to the run's log dir
    else:
        cfg.visualizer['save_dir'] = show_dir


def main():
    args = parse_args()
    cfg = load_config(args)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise SystemExit(f'error: checkpoint {args.checkpoint!r} not found')
    cfg.load_from = args.checkpoint
    cfg.resume = False  # a resumed run's saved config says resume = True
    # Weights come from the checkpoint: the ImageNet file is not needed, nor
    # the training data (hooks asking runner.iter would build the train loop).
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = None
    cfg.param_scheduler = None
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise SystemExit('error: --tta needs tta_model and tta_pipeline '
                             'in the config')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    try:
        check_data_roots(cfg, ('test_dataloader', ))
    except FileNotFoundError as err:
        raise SystemExit(f'error: {err}')
    setup_device(cfg)

    runner = build_runner(cfg)
    check_fit(
        runner, args.checkpoint, args, 'Pass the config it was trained '
        'with, or --allow-missing to evaluate anyway.')
    try:
        runner.test()
    except CheckpointMismatchError as err:
        raise SystemExit(f'error: {err}')


if __name__ == '__main__':
    run_main(main)
