"""Time the peripheral conv paths side by side and print ratios.

Usage:
    python tools/benchmark/peripheral_conv.py [--shape 1 96 128 128]
        [--kernels 13 31 51 101] [--repeat 3] [--backward] [--threads N]

For each kernel size it times the dense reference (``direct``), the FFT
path and the automatic choice (``auto``) on one input, checks that they agree
with the reference, and prints each time with its speed-up over ``direct``.
"""
import argparse
import time

import torch
from mmengine.logging import MMLogger

from pelk_mm.ops import KernelPositionEmbedding, PeripheralConv2d, choose_path


def time_call(fn, repeat: int) -> float:
    fn()  # warm-up (allocations, FFT plans)
    best = float('inf')
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shape', type=int, nargs=4,
                        default=[1, 96, 128, 128], metavar=('B', 'C', 'H', 'W'))
    parser.add_argument('--kernels', type=int, nargs='+',
                        default=[13, 31, 51, 101])
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--backward', action='store_true',
                        help='time forward + backward instead of forward')
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logger = MMLogger.get_instance('pelk_mm', log_level='INFO')
    b, c, h, w = args.shape
    mode = 'forward+backward' if args.backward else 'forward'
    rows = [f'{mode}, input {tuple(args.shape)}, fp32, '
            f'{torch.get_num_threads()} threads, best of {args.repeat}',
            f'{"K":>4} {"direct":>10} {"fft":>10} {"auto":>10} '
            f'{"fft/direct":>11} {"auto picks":>10} {"max rel err":>12}']
    torch.manual_seed(0)
    x = torch.randn(b, c, h, w, requires_grad=args.backward)
    for k in args.kernels:
        pos = KernelPositionEmbedding(c, k)
        conv = PeripheralConv2d(c, k, pos_embed=pos)
        outputs, times = {}, {}
        for path in ('direct', 'fft', 'auto'):
            conv.path = path

            def run():
                with torch.set_grad_enabled(args.backward):
                    y = conv(x)
                    if args.backward:
                        y.sum().backward()
                return y

            times[path] = time_call(run, args.repeat)
            outputs[path] = run().detach()
        ref = outputs['direct']
        err = max(((outputs[p] - ref).abs().max() / ref.abs().max()).item()
                  for p in ('fft', 'auto'))
        rows.append(
            f'{k:>4} {times["direct"] * 1e3:>8.1f}ms {times["fft"] * 1e3:>8.1f}ms'
            f' {times["auto"] * 1e3:>8.1f}ms '
            f'{times["direct"] / times["fft"]:>10.1f}x '
            f'{choose_path(k, h, w, args.backward):>10} {err:>12.1e}')
    logger.info('\n'.join(rows))


if __name__ == '__main__':
    main()
