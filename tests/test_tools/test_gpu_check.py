"""``tools/gpu/check.sh``, the one command a lent GPU machine runs: its dry
run (the same parts on CPU tensors at tiny sizes, in under a minute) and
the cost fit that turns the op benchmark's times into the constants of
``pelk_mm.ops.paths``."""
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pelk_mm.ops import paths
from pelk_mm.ops.paths.fft import fft_shape

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def op_benchmark():
    sys.path.insert(0, str(REPO / 'tools' / 'benchmark'))
    try:
        yield importlib.import_module('peripheral_conv')
    finally:
        sys.path.remove(str(REPO / 'tools' / 'benchmark'))


def test_cost_fit_recovers_the_constants_times_were_made_with(op_benchmark):
    b, c, h, w = shape = (2, 4, 32, 32)
    unit = 1e-9  # seconds per direct multiply-add at large K

    def times(fft_constant, sat_constant):
        by_kernel = {}
        for k in (13, 31, 51):
            cells = len(op_benchmark.benchmark_grid(k))
            nh, nw = fft_shape(h, w, k)
            direct = unit * k * k * h * w * b * c
            by_kernel[k] = {
                'dense':
                direct / 4 if k <= 13 else direct,
                'fft':
                fft_constant * unit * b * c * nh * nw * math.log2(nh * nw),
                'sat':
                sat_constant * unit * b * c *
                paths.Request(k, h, w, num_cells=cells).box_ops,
            }
        return by_kernel

    forward = op_benchmark.fitted_costs(shape, 'cpu', times(3.0, 0.25))
    assert forward['unit_seconds'] == pytest.approx(unit)
    assert forward['direct_fast_speedup'] == pytest.approx(4.0)
    assert forward['fft'] == pytest.approx(3.0)
    assert forward['sat'] == pytest.approx(0.25)
    assert forward['triton'] is None  # not timed
    training = op_benchmark.fitted_costs(shape, 'cpu', times(2.0, 0.5))
    report = op_benchmark.costs_report('cpu', {
        'forward': forward,
        'forward+backward': training
    })
    # The fused path's training factor: its backward's weight relative to
    # the FFT path's, (0.5 / 0.25) / (2 / 3).
    assert 'sat.py:      SATCosts(0.25, 3)' in report
    assert 'fft.py:      3' in report
    assert 'DirectCosts(13, 4)' in report


@pytest.mark.slow  # the whole check, at tiny sizes (half a minute)
def test_dry_run_measures_every_part_on_the_cpu(tmp_path):
    """The command a GPU run will use, on CPU tensors: every part runs (the
    bf16 benchmarks are the fp32 ones' plumbing), the accuracy of every CPU
    path is within its tolerance, and the report holds the benchmark tables
    and the fitted constants."""
    proc = subprocess.run(
        ['bash', 'tools/gpu/check.sh', '--dry-run', '--out',
         str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / 'gpu_check.json').read_text())
    parts = report['parts']
    assert report['dry_run'] and list(parts) == [
        'environment', 'accuracy', 'op-fp32', 'backbone-fp32', 'backbone-bf16',
        'op-bf16', 'gpu-tests', 'demo-amp'
    ]
    statuses = {name: part['status'] for name, part in parts.items()}
    assert statuses == dict({name: 'ok'
                             for name in parts}, **{
                                 'backbone-bf16': 'skipped',
                                 'op-bf16': 'skipped'
                             }), {
                                 n: p.get('reason')
                                 for n, p in parts.items()
                             }
    rows = parts['accuracy']['results']
    assert {r['path'] for r in rows} >= {'direct', 'fft', 'box_sums'}
    assert {r['dtype'] for r in rows} == {'fp32', 'bf16', 'fp16'}
    assert all(r['ok'] for r in rows)
    fits = parts['op-fp32']['results']['fitted_costs']
    assert fits['forward']['fft'] > 0
    assert 'images_per_second' in parts['backbone-fp32']['results']
    # Here every gpu-marked test is collected and skipped (no GPU).
    summary = parts['gpu-tests']['results']['summary']
    assert 'skipped' in summary and 'passed' not in summary
    assert 'failed' not in summary and 'error' not in summary
    demo = parts['demo-amp']['results']
    assert demo['configs/demo/pelk_mini_in1k_demo.py'].startswith('ok')
    text = (tmp_path / 'gpu_check.txt').read_text()
    assert 'ready to paste' in text and 'images/s' in text
