"""Time every way to run a peripheral conv side by side, with ratios.

Usage:
    python tools/benchmark/peripheral_conv.py [--device cpu|cuda[:N]]
        [--shape 2 46 128 128] [--kernels 13 31 51 101 151] [--repeat 3]
        [--dtype fp32|bf16|fp16] [--no-memory] [--max-dense-kernel 101]
        [--plot out.png] [--json out.json]
    # the peripheral conv of every stage of PeLK-T at 224 and 512 (batch 8)
    python tools/benchmark/peripheral_conv.py --stages tiny \
        --image-sizes 224 512 --shape 8 0 0 0

On one input (default: batch 2, 46 channels = 3/8 of PeLK-T's 124, 128x128:
PeLK-T's first stage at 512x512), for each kernel size K, forward and
forward+backward (gradients of the input and the weights for one dense
random output gradient), it runs:

* ``dense``: the naive depthwise ``F.conv2d`` of the expanded KxK kernel;
* ``slak``: SLaK's stripe form (Kx5 + 5xK + 5x5 depthwise convs; another
  kernel shape, timed for comparison);
* ``plain-fft``: a plain ``torch.fft`` convolution of the expanded kernel
  (the ten lines one would write first);
* every path of ``pelk_mm.ops.paths`` that can run on the device
  (``fft``, ``box_sums``, ``sat``: the fused summed-area-table extension,
  on the CPU; ``triton``: the same algorithm as Triton kernels, on CUDA;
  ``direct`` is ``dense`` above), then ``auto``.

On CUDA the last lines check the Triton kernels' goal: forward+backward at
K = 51 at least :data:`SPEEDUP_GOAL` times the ``fft`` path, and
t(K = 101) / t(K = 51) under :data:`GROWTH_GOAL`.

With ``--device cuda`` everything runs on the GPU (``dense`` and ``slak``
are cuDNN's depthwise convs) and each call is timed to the end of its
kernels; peak memory is then torch's peak allocation on the device.

With ``--stages ARCH``, the input and K are instead those of the
peripheral conv of each stage of that PeLK arch at each of
``--image-sizes`` (batch from ``--shape``), one table per stage, without
the memory probe, the cost fit and the plot.

It prints the best time of ``--repeat`` runs, the speed-up over ``dense``
and ``plain-fft``, the achieved GFLOP/s of the methods whose work is a
count of operations (``dense``: 2K^2 per pixel; the summed-area paths:
2k'^2 + 4k'; forward+backward three times that) and that over the rate of
a float32 1024^3 matmul timed in the same run, the peak extra memory of
one run (the growth of the resident set, sampled in a separate process;
``--no-memory`` skips it), and the largest relative error against
``dense`` (in float64 where ``dense`` is timed), then the cost constants
of every path that these times imply (``fit_path_costs.py``, which the
JSON of ``--json`` can be given to later). A PNG of time against K is
written with ``--plot``.
"""
import argparse
import copy
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from fit_path_costs import benchmark_grid, fit, report
from mmengine.logging import MMLogger
from stage_shapes import peripheral_conv_shapes

from pelk_mm.models import PeLK
from pelk_mm.ops import expand_by_grid, paths, peripheral_conv2d
from pelk_mm.ops.csrc import build
from pelk_mm.ops.grid import grid_tensor
from probes import (add_common_arguments, best_time, describe,
                    memory_for_tables, parse_arguments, peak_memory_mb,
                    report_memory, write_json)

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def plain_fft_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise "same" correlation by FFT, written plainly (the baseline)."""
    height, width = x.shape[-2:]
    size = kernel.shape[-1]
    nh, nw = height + size - 1, width + size - 1
    x_f = torch.fft.rfft2(x.float(), s=(nh, nw))
    k_f = torch.fft.rfft2(kernel.float().flip(-1, -2), s=(nh, nw))
    y = torch.fft.irfft2(x_f * k_f, s=(nh, nw))
    pad = size // 2
    return y[..., pad:pad + height, pad:pad + width].to(x.dtype)


MATMUL_SIZE = 1024


def method_flops(name: str, shape, kernel_size: int,
                 backward: bool) -> Optional[float]:
    """Operations of ``name`` on ``shape`` at ``kernel_size`` (None where
    its work is no count of operations: FFT, stripes); forward+backward
    (the input gradient is the same conv, the weight gradient as many
    products) three times the forward."""
    if name == 'dense':
        per_pixel = 2 * kernel_size * kernel_size
    elif name in paths.REGISTRY and paths.get(name).needs_grid:
        # The summed-area paths: k'^2 multiply-adds and 4k' additions.
        cells = len(benchmark_grid(kernel_size))
        per_pixel = 2 * cells * cells + 4 * cells
    else:
        return None
    b, c, h, w = shape
    return per_pixel * b * c * h * w * (3 if backward else 1)


def matmul_rate(device: torch.device, repeat: int) -> float:
    """FLOP/s of a float32 (MATMUL_SIZE)^3 matmul on ``device``, with the
    threads the benchmark uses."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    seconds = best_time(lambda: a @ b, max(repeat, 3), device)
    return 2 * MATMUL_SIZE**3 / seconds


def make_methods(channels: int, kernel_size: int, dtype,
                 device: torch.device) -> Dict:
    """name -> (parameters, function of (x, *parameters))."""
    grid = grid_tensor(benchmark_grid(kernel_size), device)
    cells = len(grid)
    blocks = torch.randn(channels, cells, cells, dtype=dtype) / kernel_size
    stripes = [
        torch.randn(channels, 1, kernel_size, 5, dtype=dtype),
        torch.randn(channels, 1, 5, kernel_size, dtype=dtype),
        torch.randn(channels, 1, 5, 5, dtype=dtype)
    ]
    blocks = blocks.to(device)
    stripes = [t.to(device) for t in stripes]
    pad = kernel_size // 2

    def dense(x, w):
        kernel = expand_by_grid(w, grid)[:, None]
        return F.conv2d(x, kernel, padding=pad, groups=channels)

    def slak(x, a, b, c):
        return (F.conv2d(x, a, padding=(pad, 2), groups=channels) +
                F.conv2d(x, b, padding=(2, pad), groups=channels) +
                F.conv2d(x, c, padding=2, groups=channels))

    def plain_fft(x, w):
        return plain_fft_conv(x, expand_by_grid(w, grid))

    def ours(path):
        # kernel_size given: no device sync to read it off the grid.
        return lambda x, w: peripheral_conv2d(
            x, w, path=path, grid=grid, kernel_size=kernel_size)

    methods = {
        'dense': ([blocks], dense),
        'slak': (stripes, slak),
        'plain-fft': ([blocks], plain_fft),
    }
    request = paths.Request(
        kernel_size,
        64,
        64,
        num_cells=cells,
        device_type=device.type,
        dtype=dtype)
    for name, refusal in paths.refusals(request).items():
        # The direct path is the dense conv above; an emulated path (the
        # Triton kernels in Triton's CPU interpreter) would time the
        # emulator.
        if refusal is None and name != 'direct' and \
                not paths.get(name).emulated(request):
            methods[name] = ([blocks], ours(name))
    methods['auto'] = ([blocks], ours('auto'))
    return methods


#: The Triton kernels' goals: forward+backward at K = 51 at least this many
#: times faster than the FFT path, and t(K = 101) / t(K = 51) below this.
SPEEDUP_GOAL = 2.0
GROWTH_GOAL = 1.3


def triton_goal(times: Dict) -> str:
    """The Triton kernels' goals, measured (where both K were run)."""
    lines = []
    if 51 in times and 'triton' in times[51]:
        speedup = times[51]['fft'][0] / times[51]['triton'][0]
        met = 'met' if speedup >= SPEEDUP_GOAL else 'NOT met'
        lines.append(f'goal: triton at K=51 >= {SPEEDUP_GOAL:g}x fft: '
                     f'{speedup:.2f}x ({met})')
        if 101 in times and 'triton' in times[101]:
            growth = times[101]['triton'][0] / times[51]['triton'][0]
            met = 'met' if growth < GROWTH_GOAL else 'NOT met'
            lines.append(f'goal: triton t(K=101)/t(K=51) < {GROWTH_GOAL:g}: '
                         f'{growth:.2f} ({met})')
    return '\n'.join(lines)


def run_once(fn: Callable, x, params, grad_out=None):
    """``fn(x, *params)``; with ``grad_out`` (a dense output gradient, as
    a network's next layer hands back: not the stride-0 ones of a
    ``sum()``), its backward too."""
    if grad_out is not None:
        leaves = [x] + params
        out = fn(*leaves)
        torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
        return out.detach()
    with torch.no_grad():
        return fn(x, *params)


def measure(args, backward: bool, memory: bool) -> Dict:
    """{K: {method: (seconds or MB, max rel err or None)}}."""
    b, c, h, w = args.shape
    dtype = DTYPES[args.dtype]
    results = {}
    for k in args.kernels:
        torch.manual_seed(k)
        methods = make_methods(c, k, dtype, args.device)
        x = torch.randn(b, c, h, w, dtype=dtype).to(args.device)
        x.requires_grad_(backward)
        grad_out = torch.randn_like(x.detach()) if backward else None
        skip_dense = k > args.max_dense_kernel
        reference = None  # the dense conv in float64, same parameters
        if not skip_dense and not memory:
            params64 = [p.double() for p in methods['dense'][0]]
            with torch.no_grad():
                reference = methods['dense'][1](x.detach().double(), *params64)
        results[k] = {}
        for name, (params, fn) in methods.items():
            if name == 'dense' and skip_dense:
                continue
            params = [p.clone().requires_grad_(backward) for p in params]

            def call(fn=fn, params=params):
                return run_once(fn, x, params, grad_out)

            if memory:
                call()  # warm-up: FFT plans, thread pools
                results[k][name] = (peak_memory_mb(call,
                                                   device=args.device), None)
                continue
            seconds = best_time(call, args.repeat, args.device)
            error = None
            if reference is not None and name != 'slak':
                out = call().double()
                error = ((out - reference).abs().max() /
                         reference.abs().max()).item()
            results[k][name] = (seconds, error)
    return results


def table(args,
          mode: str,
          times: Dict,
          memory: Dict,
          matmul: float,
          title: str = '') -> str:
    rows = [
        f'{title}{mode}, input {tuple(args.shape)}, {args.dtype}, '
        f'{describe(args.device)}, best of {args.repeat}; float32 matmul '
        f'{matmul / 1e9:.0f} GFLOP/s',
        f'{"K":>4} {"method":>10} {"time":>10} {"vs dense":>9} '
        f'{"vs plain-fft":>12} {"GFLOP/s":>8} {"of matmul":>9} '
        f'{"peak MB":>8} {"max rel err":>11}'
    ]
    for k, by_method in times.items():
        dense = by_method.get('dense', (None, ))[0]
        plain = by_method['plain-fft'][0]
        for name, (seconds, error) in by_method.items():
            peak = memory.get(str(k), {}).get(name, [float('nan')])[0]
            flops = method_flops(name, args.shape, k, 'backward' in mode)
            rate = f'{flops / seconds / 1e9:.1f}' if flops else '-'
            share = f'{flops / seconds / matmul:.0%}' if flops else '-'
            rows.append(
                f'{k:>4} {name:>10} {seconds * 1e3:>8.1f}ms '
                f'{(f"{dense / seconds:.1f}x" if dense else "-"):>9} '
                f'{plain / seconds:>11.2f}x {rate:>8} {share:>9} '
                f'{peak:>8.0f} '
                f'{(f"{error:.1e}" if error is not None else "-"):>11}')
    return '\n'.join(rows)


def plot(results: Dict[str, Dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, len(results), figsize=(11, 4))
    for ax, (mode, by_kernel) in zip(axes, results.items()):
        names = sorted({n for times in by_kernel.values() for n in times})
        for name in names:
            ks = [k for k in by_kernel if name in by_kernel[k]]
            ax.plot(
                ks, [by_kernel[k][name] * 1e3 for k in ks],
                marker='o',
                label=name)
        ax.set_yscale('log')
        ax.set_xlabel('kernel size K')
        ax.set_ylabel('time (ms)')
        ax.set_title(mode)
        ax.grid(True, which='both', alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_facts(args, matmul: float) -> Dict:
    """What the JSON records of the run beside its results."""
    return dict(
        shape=None if args.stages else args.shape,
        device_type=args.device.type,
        dtype=args.dtype,
        matmul_flops=matmul)


def stages(args, modes: Dict[str, bool], matmul: float, logger) -> None:
    """The tables of ``--stages``: each stage's peripheral conv at each
    image size, and the JSON of their times."""
    results = {}
    for size in args.image_sizes:
        for conv in peripheral_conv_shapes(args.stages, size):
            stage = copy.copy(args)
            stage.shape = [
                args.shape[0], conv['channels'], conv['size'], conv['size']
            ]
            stage.kernels = [conv['kernel_size']]
            name = f'{args.stages} stage {conv["stage"]} at {size}'
            results[name] = {'shape': stage.shape}
            for mode, backward in modes.items():
                times = measure(stage, backward, memory=False)
                logger.info(table(stage, mode, times, {}, matmul, f'{name}: '))
                results[name][mode] = {
                    n: v[0]
                    for n, v in times[conv['kernel_size']].items()
                }
    write_json(
        args.json, args.device, stages=results, **run_facts(args, matmul))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--shape',
        type=int,
        nargs=4,
        default=[2, 46, 128, 128],
        metavar=('B', 'C', 'H', 'W'))
    parser.add_argument(
        '--kernels', type=int, nargs='+', default=[13, 31, 51, 101, 151])
    add_common_arguments(parser)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='fp32')
    parser.add_argument(
        '--modes',
        nargs='+',
        default=['forward', 'backward'],
        choices=['forward', 'backward'])
    parser.add_argument(
        '--max-dense-kernel',
        type=int,
        default=101,
        help='skip the naive dense conv above this K')
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument(
        '--memory-only', action='store_true',
        help=argparse.SUPPRESS)  # the memory probe's run
    parser.add_argument('--plot', default=None, help='PNG of time vs K')
    parser.add_argument(
        '--stages',
        default=None,
        choices=sorted(PeLK.arch_settings),
        help='time the peripheral conv of each stage of this PeLK arch')
    parser.add_argument(
        '--image-sizes',
        type=int,
        nargs='+',
        default=[224],
        help='square image sizes of --stages')
    args = parse_arguments(parser)
    logger = MMLogger.get_instance('pelk_mm', log_level='INFO')
    if args.device.type == 'cpu' and not build.available():
        logger.warning('the summed-area-table extension is not available; '
                       'its rows are left out')
    modes = {'forward': False, 'forward+backward': True}
    modes = {
        m: b
        for m, b in modes.items()
        if ('backward' if b else 'forward') in args.modes
    }

    def measure_memory():
        return {
            mode: measure(args, backward, memory=True)
            for mode, backward in modes.items()
        }

    if args.memory_only:
        report_memory(measure_memory())
        return
    matmul = matmul_rate(args.device, args.repeat)
    if args.stages:
        stages(args, modes, matmul, logger)
        return
    memory = memory_for_tables(args, measure_memory)
    results, errors, goals = {}, {}, []
    for mode, backward in modes.items():
        times = measure(args, backward, memory=False)
        logger.info(table(args, mode, times, memory.get(mode, {}), matmul))
        if backward and triton_goal(times):
            goals.append(triton_goal(times))
            logger.info(goals[-1])
        results[mode] = {
            k: {
                n: v[0]
                for n, v in by_method.items()
            }
            for k, by_method in times.items()
        }
        errors[mode] = {
            k: {
                n: v[1]
                for n, v in by_method.items()
            }
            for k, by_method in times.items()
        }
    fits = {
        mode: fit(args.shape, args.device.type, by_kernel, mode != 'forward')
        for mode, by_kernel in results.items()
    }
    logger.info(report(args.device.type, fits))
    write_json(
        args.json,
        args.device,
        seconds=results,
        max_rel_err=errors,
        peak_mb=memory,
        goals=goals,
        fitted_costs=fits,
        **run_facts(args, matmul))
    if args.plot:
        plot(results, args.plot,
             f'peripheral conv, input {tuple(args.shape)}, {args.dtype}')
        logger.info(f'plot written to {args.plot}')


if __name__ == '__main__':
    main()
