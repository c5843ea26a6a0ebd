"""PeLK-T against ConvNeXt-T and a SLaK-T-shaped baseline, in one run.

Usage:
    python tools/benchmark/backbone.py [--sizes 224 512] [--batch 1]
        [--repeat 3] [--train-size 512] [--no-memory]

Backbones (classification form, 1000-class head left out):

* ``pelk-t``: PeLK-T as trained (BN branches, positional embeddings), and
  ``pelk-t-deploy`` after ``switch_to_deploy()`` (BNs folded, the 5x5 branch
  merged, W * h frozen);
* ``convnext-t``: mmpretrain's ConvNeXt-T (7x7 depthwise kernels);
* ``slak-t``: ConvNeXt-T at SLaK's widths (x1.3) whose depthwise convs are
  SLaK's stripe form with BN (Kx5 + 5xK + 5x5, K = 51/49/47/13 per stage),
  dense (no sparsity): the shape of SLaK-T, not its weights.

It prints images/s for inference at each size (best of ``--repeat``), the
time of one training step (forward, backward, AdamW step) at
``--train-size``, each with its ratio to ConvNeXt-T, and the peak extra
memory of one call (growth of the resident set, sampled in a separate
process).
"""
import argparse
import sys
from typing import Dict

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmpretrain.models.backbones import ConvNeXt

from pelk_mm.models import PeLK
from probes import (best_time, memory_in_subprocess, peak_memory_mb,
                    report_memory)

SLAK_KERNELS = [51, 49, 47, 13]
SLAK_WIDTHS = [124, 249, 499, 998]


class StripeConv(nn.Module):
    """SLaK's decomposed large kernel: (Kx5 + 5xK + 5x5) depthwise + BN."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        pad = kernel_size // 2

        def branch(kernel, padding):
            return nn.Sequential(
                nn.Conv2d(
                    channels,
                    channels,
                    kernel,
                    padding=padding,
                    groups=channels,
                    bias=False), nn.BatchNorm2d(channels))

        self.vertical = branch((kernel_size, 5), (pad, 2))
        self.horizontal = branch((5, kernel_size), (2, pad))
        self.small = branch(5, 2)

    def forward(self, x):
        return self.vertical(x) + self.horizontal(x) + self.small(x)


def slak_t() -> nn.Module:
    model = ConvNeXt(arch=dict(depths=[3, 3, 9, 3], channels=SLAK_WIDTHS))
    for stage, kernel_size, width in zip(model.stages, SLAK_KERNELS,
                                         SLAK_WIDTHS):
        for block in stage:
            block.depthwise_conv = StripeConv(width, kernel_size)
    return model


def build(name: str) -> nn.Module:
    if name.startswith('pelk-t'):
        model = PeLK('tiny')
        if name.endswith('deploy'):
            model.eval()
            model.switch_to_deploy()
        return model
    if name == 'convnext-t':
        return ConvNeXt(arch='tiny')
    if name == 'slak-t':
        return slak_t()
    raise ValueError(name)


def measure(args, models: Dict[str, nn.Module], memory: bool) -> Dict:
    """{case: {model: seconds or MB}}; cases 'infer@SIZE', 'train@SIZE'."""
    results = {}
    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size)
        case = results.setdefault(f'infer@{size}', {})
        for name, model in models.items():
            model.eval()

            def infer(model=model):
                with torch.no_grad():
                    return model(x)

            if memory:
                infer()
                case[name] = peak_memory_mb(infer)
            else:
                case[name] = best_time(infer, args.repeat)
    if args.train_size:
        size = args.train_size
        x = torch.randn(args.batch, 3, size, size)
        case = results.setdefault(f'train@{size}', {})
        for name, model in models.items():
            if name.endswith('deploy'):
                continue  # deploy mode is for inference
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def step(model=model, optimizer=optimizer):
                optimizer.zero_grad()
                model(x)[-1].float().mean().backward()
                optimizer.step()

            if memory:
                step()
                case[name] = peak_memory_mb(step)
            else:
                case[name] = best_time(step, args.repeat)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--models',
        nargs='+',
        default=['convnext-t', 'slak-t', 'pelk-t', 'pelk-t-deploy'])
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 512])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--train-size', type=int, default=512)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument(
        '--memory-only', action='store_true',
        help=argparse.SUPPRESS)  # the memory probe's run
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: build(name) for name in args.models}
    if args.memory_only:
        report_memory(measure(args, models, memory=True))
        return
    memory = {} if args.no_memory else memory_in_subprocess(sys.argv)
    times = measure(args, models, memory=False)

    base = 'convnext-t' if 'convnext-t' in models else args.models[0]
    rows = [
        f'batch {args.batch}, fp32, {torch.get_num_threads()} threads, '
        f'best of {args.repeat}'
    ]
    for case, by_model in times.items():
        kind, size = case.split('@')
        title = ("inference" if kind == "infer" else
                 "training step (forward, backward, AdamW)")
        rows.append(f"{title} at {size}x{size}:")
        for name, seconds in by_model.items():
            peak = memory.get(case, {}).get(name, float('nan'))
            rate = (f'{args.batch / seconds:>8.2f} images/s'
                    if kind == 'infer' else ' ' * 17)
            rows.append(f'  {name:>14} {rate} {seconds * 1e3:>9.1f} ms '
                        f'{seconds / by_model[base]:>5.2f}x {base}  '
                        f'peak {peak:>6.0f} MB')
    MMLogger.get_instance('pelk_mm', log_level='INFO').info('\n'.join(rows))


if __name__ == '__main__':
    main()
