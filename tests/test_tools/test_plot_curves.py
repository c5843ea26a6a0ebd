import json
import re

import numpy as np
from PIL import Image


def write_run(work_dir, stamp, records):
    vis = work_dir / stamp / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text(''.join(
        json.dumps(r) + '\n' for r in records))


def train_record(it, loss, lr=1e-3, **extra):
    return dict(
        lr=lr,
        loss=loss,
        decode_loss=loss / 2,
        time=1.0,
        iter=it,
        step=it,
        **extra)


def test_resumed_iteration_run_continues_its_curve(tmp_path, run_tool):
    work = tmp_path / 'work'
    write_run(
        work,
        '20260101_000000',
        [
            train_record(10, 4.0),
            train_record(20, 3.0),
            dict(mIoU=10.0, aAcc=50.0, time=0.1, step=20),
            train_record(30, 9.9),  # replaced by the resumed run
        ])
    write_run(work, '20260101_010000', [
        train_record(30, 2.0),
        train_record(40, 1.0),
        dict(mIoU=30.5, aAcc=70.0, time=0.1, step=40),
    ])
    proc = run_tool('tools/analysis/plot_curves.py', str(work))
    log = proc.stdout + proc.stderr
    assert re.search(
        r'curves of 2 run\(s\) written to .*curves.png: loss 1.0000 at '
        r'iteration 40; mIoU 30.5 at iteration 40', log), log
    image = np.asarray(Image.open(work / 'curves.png').convert('L'))
    assert image.shape == (400, 1500) and image.std() > 10


def test_epoch_based_validation_sits_at_the_end_of_its_epoch(
        tmp_path, run_tool_here):
    work = tmp_path / 'work'
    write_run(work, '20260101_000000', [
        train_record(10, 4.0, epoch=1),
        train_record(20, 3.0, epoch=1),
        {
            'coco/bbox_mAP': 0.1,
            'coco/segm_mAP': 0.05,
            'step': 1
        },
        train_record(30, 2.0, epoch=2),
        train_record(40, 1.5, epoch=2),
        {
            'coco/bbox_mAP': 0.3,
            'coco/segm_mAP': 0.2,
            'step': 2
        },
    ])
    proc = run_tool_here('tools/analysis/plot_curves.py', str(work), '--out',
                         str(tmp_path / 'c.png'), '--metrics', 'coco/segm_mAP')
    log = proc.stdout + proc.stderr
    assert 'coco/segm_mAP 0.2 at iteration 40' in log, log
    assert 'bbox' not in log.split('written to')[1]
    assert (tmp_path / 'c.png').stat().st_size > 10000
    drawn = (tmp_path / 'c.png').read_bytes()
    proc = run_tool_here(
        'tools/analysis/plot_curves.py',
        str(work),
        '--out',
        str(tmp_path / 'c.png'),
        check=False)
    assert proc.returncode != 0
    assert f'--out {tmp_path / "c.png"} exists: pass --overwrite' in \
        proc.stderr
    assert (tmp_path / 'c.png').read_bytes() == drawn
    run_tool_here('tools/analysis/plot_curves.py', str(work), '--out',
                  str(tmp_path / 'c.png'), '--overwrite')
    assert (tmp_path / 'c.png').read_bytes() != drawn  # all three panels


def test_plot_curves_refusals(tmp_path, run_tool_here):
    proc = run_tool_here(
        'tools/analysis/plot_curves.py', str(tmp_path), check=False)
    assert proc.returncode != 0
    assert f'error: no scalar logs in {tmp_path}' in proc.stderr
    write_run(tmp_path, '20260101_000000', [train_record(10, 4.0)])
    proc = run_tool_here(
        'tools/analysis/plot_curves.py',
        str(tmp_path),
        '--metrics',
        'mIoU',
        check=False)
    assert proc.returncode != 0
    assert 'no validation values of mIoU in the log; it has: none' in \
        proc.stderr
