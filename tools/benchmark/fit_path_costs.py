"""Fit every registered path's cost constant from a benchmark run.

Usage:
    python tools/benchmark/peripheral_conv.py --json times.json [...]
    python tools/benchmark/fit_path_costs.py times.json [--json fits.json]

``path='auto'`` takes the path of least cost, and each path's cost is its
constant (``costs[device type]``) times its cost formula
(``ConvPath.work``: what its time grows with). The unit of every constant
is one multiply-add of the direct conv at large K (``direct``'s constant
is 1). This reads the times of ``peripheral_conv.py`` (one input, several
K, forward and forward+backward) and fits, for every registered path that
was timed, its constant: the median over K of its time over (the time of
one unit x its formula). It also fits the two numbers inside formulas:
the direct conv's speedup on its specialised small kernels
(``DirectPath.fast_kernels``), and the training factor of a path that
declares one (``training_factor``: how much more its backward weighs than
the FFT path's). The forward fit is the one to paste; a new path needs no
change here.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

from mmengine.logging import MMLogger

from pelk_mm.ops import paths
from pelk_mm.ops.grid import sharing_grid

# The benchmark's name of the direct conv (the other paths keep theirs).
DIRECT_TIMED_AS = 'dense'


def benchmark_grid(kernel_size: int) -> list:
    """The sharing grid ``peripheral_conv.py`` times for ``kernel_size``
    (PeLK's centre 5x5, 7x7 from K = 101)."""
    return sharing_grid(kernel_size, 7 if kernel_size >= 101 else 5)


def _median(values: List[Optional[float]]) -> Optional[float]:
    kept = sorted(v for v in values if v is not None)
    return kept[len(kept) // 2] if kept else None


def fit(shape, device_type: str, times: Dict[int, Dict[str, float]],
        training: bool) -> Dict[str, Optional[float]]:
    """The constants that ``times`` (``{K: {method: seconds}}`` of one
    mode, ``training``: forward+backward) imply: every timed path's, the
    seconds of one unit (``unit_seconds``) and the direct conv's
    small-kernel speedup (``direct_fast_speedup``); None where not timed."""
    b, c, h, w = shape
    direct = paths.get('direct')
    fast = direct.fast_kernels.get(device_type, direct.fast_kernels['cpu'])

    def request(k):
        return paths.request_for(
            k,
            h,
            w,
            requires_grad=training,
            num_cells=len(benchmark_grid(k)),
            device_type=device_type)

    def macs(k):
        return b * c * k * k * h * w

    dense = {
        k: t[DIRECT_TIMED_AS]
        for k, t in times.items() if DIRECT_TIMED_AS in t
    }
    unit = _median([dense[k] / macs(k) for k in dense if k > fast.max_kernel])
    if unit is None:
        return {}
    fitted: Dict[str, Optional[float]] = dict(
        unit_seconds=unit,
        direct_fast_speedup=_median([
            unit / (dense[k] / macs(k)) for k in dense if k <= fast.max_kernel
        ]))
    for name, path in paths.REGISTRY.items():
        if name == 'direct':
            continue
        ratios = []
        for k, by_method in times.items():
            work = path.work(request(k)) if name in by_method else None
            if work:
                ratios.append(by_method[name] / (unit * b * c * work))
        fitted[name] = _median(ratios)
    return fitted


def fit_modes(run: dict) -> Dict[str, Dict[str, Optional[float]]]:
    """:func:`fit` of every mode of a ``peripheral_conv.py`` JSON."""
    return {
        mode:
        fit(run['shape'], run['device_type'], {
            int(k): t
            for k, t in by_kernel.items()
        }, mode != 'forward')
        for mode, by_kernel in run['seconds'].items()
    }


def report(device_type: str, fits: Dict[str, Dict]) -> str:
    """The fitted constants per mode and, ready to paste into each path's
    module, the forward fit."""
    forward = fits.get('forward') or {}
    if not forward:
        return ('cost constants: not fitted (the dense conv was not timed '
                'above its fast-kernel limit)')
    rows = [
        f'cost constants fitted on {device_type} (units: direct '
        f'multiply-adds at large K)'
    ]
    for mode, fitted in fits.items():
        rows.append(f'  {mode}: ' +
                    ', '.join(f'{name} {value:.3g}'
                              for name, value in fitted.items()
                              if value is not None and name != 'unit_seconds'))
    rows.append(f"  ready to paste (costs['{device_type}'] of each path, "
                'from the forward fit):')
    direct = paths.get('direct')
    if forward.get('direct_fast_speedup'):
        limit = direct.fast_kernels.get(device_type,
                                        direct.fast_kernels['cpu'])
        rows.append(f'    direct.py: fast_kernels FastKernels('
                    f'{limit.max_kernel}, '
                    f'{forward["direct_fast_speedup"]:.3g})')
    training = fits.get('forward+backward') or {}
    for name, path in paths.REGISTRY.items():
        if name == 'direct' or not forward.get(name):
            continue
        line = f'    {name}.py: {forward[name]:.3g}'
        declared = getattr(path, 'training_factor', None)
        if declared and training.get(name) and training.get('fft'):
            # The formula's factor that would make the training fit equal
            # the forward one, relative to the FFT path's.
            factor = declared * (training[name] / forward[name]) / (
                training['fft'] / forward['fft'])
            line += f', training_factor {factor:.3g}'
        rows.append(line)
    return '\n'.join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('times', help="peripheral_conv.py's --json file")
    parser.add_argument('--json', help='write the fitted constants here')
    args = parser.parse_args()
    logger = MMLogger.get_instance('pelk_mm', log_level='INFO')
    if not osp.isfile(args.times):
        raise SystemExit(f'error: {args.times} not found; write it with '
                         f'tools/benchmark/peripheral_conv.py --json FILE')
    with open(args.times) as f:
        run = json.load(f)
    if not run.get('seconds') or not run.get('shape'):
        raise SystemExit(
            f'error: {args.times} holds no times of one input (is it of '
            f'peripheral_conv.py, without --stages?)')
    fits = fit_modes(run)
    logger.info(report(run['device_type'], fits))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(fits, f, indent=1)


if __name__ == '__main__':
    sys.exit(main())
