"""tools/benchmark/fit_path_costs.py: the constants of ``pelk_mm.ops.paths``
from the op benchmark's times."""
import json
import math
import sys
from pathlib import Path

import pytest

from pelk_mm.ops import paths
from pelk_mm.ops.paths.fft import fft_shape

REPO = Path(__file__).resolve().parents[2]
TOOL = 'tools/benchmark/fit_path_costs.py'


@pytest.fixture(scope='module')
def fitter():
    sys.path.insert(0, str(REPO / 'tools' / 'benchmark'))
    try:
        import fit_path_costs
        yield fit_path_costs
    finally:
        sys.path.remove(str(REPO / 'tools' / 'benchmark'))


SHAPE = (2, 4, 32, 32)
UNIT = 1e-9  # seconds per direct multiply-add at large K


def made_times(fitter, fft_constant, sat_constant, training):
    """Times made with these constants by the paths' own formulas (the
    direct conv 4x faster at K = 13 in inference)."""
    b, c, h, w = SHAPE
    by_kernel = {}
    for k in (13, 31, 51):
        cells = len(fitter.benchmark_grid(k))
        nh, nw = fft_shape(h, w, k)
        direct = UNIT * k * k * h * w * b * c
        request = paths.request_for(
            k, h, w, requires_grad=training, num_cells=cells)
        by_kernel[k] = {
            'dense': direct / 4 if k <= 13 and not training else direct,
            'fft': fft_constant * UNIT * b * c * nh * nw * math.log2(nh * nw),
            'sat':
            sat_constant * UNIT * b * c * paths.get('sat').work(request),
        }
    return by_kernel


def test_the_fit_recovers_the_constants_times_were_made_with(fitter):
    forward = fitter.fit(SHAPE, 'cpu', made_times(fitter, 3.0, 0.25, False),
                         False)
    assert forward['unit_seconds'] == pytest.approx(UNIT)
    assert forward['direct_fast_speedup'] == pytest.approx(4.0)
    assert forward['fft'] == pytest.approx(3.0)
    assert forward['sat'] == pytest.approx(0.25)
    assert forward['triton'] is None and forward['box_sums'] is None
    training = fitter.fit(SHAPE, 'cpu', made_times(fitter, 2.0, 0.5, True),
                          True)
    assert training['sat'] == pytest.approx(0.5)
    report = fitter.report('cpu', {
        'forward': forward,
        'forward+backward': training
    })
    # The training factor that would make the sat fits agree, relative to
    # the FFT path's: declared * (0.5 / 0.25) / (2 / 3).
    factor = paths.get('sat').training_factor * 3
    assert f'sat.py: 0.25, training_factor {factor:.3g}' in report
    assert 'fft.py: 3\n' in report
    assert 'direct.py: fast_kernels FastKernels(13, 4)' in report


def test_the_tool_reads_the_benchmarks_json(tmp_path, run_tool_here, fitter):
    """Every registered path's constant from one JSON of
    peripheral_conv.py (a new path needs no change in the tool); a file
    of --stages, or none, is refused saying what to give."""
    times = tmp_path / 'times.json'
    times.write_text(
        json.dumps(
            dict(
                shape=SHAPE,
                device_type='cpu',
                seconds={
                    'forward': made_times(fitter, 3.0, 0.25, False),
                    'forward+backward': made_times(fitter, 2.0, 0.5, True)
                })))
    fits = tmp_path / 'fits.json'
    run_tool_here(TOOL, times, '--json', fits)
    fitted = json.loads(fits.read_text())
    assert set(fitted['forward']) == {
        'unit_seconds', 'direct_fast_speedup', *paths.REGISTRY
    } - {'direct'}
    assert fitted['forward']['fft'] == pytest.approx(3.0)
    proc = run_tool_here(TOOL, tmp_path / 'none.json', check=False)
    assert 'peripheral_conv.py --json FILE' in proc.stderr
    times.write_text(json.dumps(dict(shape=None, stages={})))
    proc = run_tool_here(TOOL, times, check=False)
    assert proc.returncode != 0 and 'without --stages' in proc.stderr
