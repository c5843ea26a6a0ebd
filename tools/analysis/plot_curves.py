"""Training curves of a run: loss terms, learning rate, validation metrics.

Usage:
    python tools/analysis/plot_curves.py WORK_DIR [--out FILE.png]
        [--metrics mIoU coco/bbox_mAP ...] [--overwrite]

Reads mmengine's scalar logs (``WORK_DIR/<timestamp>/vis_data/scalars.json``,
written by every run's LocalVisBackend) of every run in WORK_DIR in time
order, so a resumed run continues its curve (a later run's values replace
an earlier one's at the same iteration). Draws three panels against the
training iteration: every logged loss term, the learning rate, and the
validation metrics (by default the main one of mmseg, mmdet or mmpretrain
that the log holds: mIoU, COCO box/mask mAP, top-1; by epoch-based runs
placed at the last iteration of their epoch). Writes WORK_DIR/curves.png
unless ``--out`` says otherwise; an existing file only with ``--overwrite``.
"""
import argparse
import glob
import json
import os.path as osp
from typing import Dict, List, Tuple

from mmengine.logging import MMLogger

from pelk_mm.runtime import check_output
from pelk_mm.tasks import TASKS

MAIN_METRICS = tuple(metric for task in TASKS.values()
                     for metric in task.main_metrics)
NOT_A_METRIC = ('time', 'data_time', 'step', 'epoch', 'iter')

Series = Dict[str, Dict[int, float]]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir')
    parser.add_argument('--out', help='PNG to write (WORK_DIR/curves.png)')
    parser.add_argument(
        '--metrics',
        nargs='+',
        help=f'validation metrics to draw (default: those of '
        f'{", ".join(MAIN_METRICS)} in the log)')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace the PNG if it exists')
    return parser.parse_args()


def scalar_logs(work_dir: str) -> List[str]:
    """The scalar logs of every run in ``work_dir``, oldest first."""
    logs = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not logs:
        raise SystemExit(
            f'error: no scalar logs in {work_dir} (looked for '
            f'{osp.join(work_dir, "<timestamp>", "vis_data", "scalars.json")}'
            f', which mmengine writes during training); is it the work dir '
            f'of a training run?')
    return logs


def read_curves(logs: List[str]) -> Tuple[Series, Series]:
    """(training scalars, validation scalars), each {name: {iteration:
    value}}."""
    train: Series = {}
    val_by_step: Series = {}
    epoch_ends: Dict[int, int] = {}  # epoch -> its last logged iteration
    for path in logs:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    # The last line of a killed run may be cut short.
                    MMLogger.get_current_instance().warning(
                        f'{path}:{number}: not JSON, skipped')
                    continue
                if 'iter' in record:  # a training iteration
                    step = record['iter']
                    if 'epoch' in record:
                        epoch_ends[record['epoch']] = max(
                            epoch_ends.get(record['epoch'], 0), step)
                    target = train
                else:  # a validation (or test) pass
                    step, target = record['step'], val_by_step
                for name, value in record.items():
                    if name not in NOT_A_METRIC and isinstance(
                            value, (int, float)):
                        target.setdefault(name, {})[step] = value
    # Epoch-based runs validate at "step" = epoch: place it at the epoch's
    # last iteration.
    val = {
        name: {
            epoch_ends.get(step, step): value
            for step, value in points.items()
        }
        for name, points in val_by_step.items()
    } if epoch_ends else val_by_step
    return train, val


def plot_curves(train: Series, val: Series, metrics: List[str], out: str,
                title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, (loss_ax, lr_ax, val_ax) = plt.subplots(1, 3, figsize=(15, 4))
    losses = sorted(name for name in train if 'loss' in name)
    for name in losses:
        steps = sorted(train[name])
        loss_ax.plot(
            steps, [train[name][s] for s in steps],
            label=name,
            linewidth=2.5 if name == 'loss' else 1)
    loss_ax.set_title('training loss')
    loss_ax.set_yscale('log')
    loss_ax.legend(fontsize='x-small', ncol=2)
    for name in ('lr', 'base_lr'):
        if name in train:
            steps = sorted(train[name])
            lr_ax.plot(steps, [train[name][s] for s in steps], label=name)
    lr_ax.set_title('learning rate')
    lr_ax.legend(fontsize='small')
    for name in metrics:
        steps = sorted(val[name])
        val_ax.plot(steps, [val[name][s] for s in steps], 'o-', label=name)
    val_ax.set_title('validation')
    if metrics:
        val_ax.legend(fontsize='small')
    else:
        val_ax.text(
            0.5, 0.5, 'no validation in the log', ha='center', va='center')
    val_ax.set_xlim(loss_ax.get_xlim())
    for ax in (loss_ax, lr_ax, val_ax):
        ax.set_xlabel('iteration')
        ax.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main():
    args = parse_args()
    logger = MMLogger.get_instance('pelk_mm', log_level='INFO')
    logs = scalar_logs(args.work_dir)
    out = args.out or osp.join(args.work_dir, 'curves.png')
    try:
        check_output(out, logs, args.overwrite)
    except FileExistsError as err:
        raise SystemExit(f'error: {err}')
    train, val = read_curves(logs)
    if 'loss' not in train:
        raise SystemExit(f'error: {", ".join(logs)} hold no training loss')
    if args.metrics:
        missing = [m for m in args.metrics if m not in val]
        if missing:
            raise SystemExit(
                f'error: no validation values of {", ".join(missing)} in '
                f'the log; it has: {", ".join(sorted(val)) or "none"}')
        metrics = args.metrics
    else:
        metrics = [m for m in MAIN_METRICS if m in val]
    plot_curves(train, val, metrics, out,
                osp.basename(osp.normpath(args.work_dir)))
    last = max(train['loss'])
    summary = [f'loss {train["loss"][last]:.4f} at iteration {last}']
    for name in metrics:
        step = max(val[name])
        summary.append(f'{name} {val[name][step]} at iteration {step}')
    logger.info(f'curves of {len(logs)} run(s) written to {out}: ' +
                '; '.join(summary))


if __name__ == '__main__':
    main()
