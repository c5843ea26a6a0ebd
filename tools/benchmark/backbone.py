"""PeLK-T against ConvNeXt-T and a SLaK-T-shaped baseline, in one run.

Usage:
    python tools/benchmark/backbone.py [--device cpu|cuda[:N]]
        [--amp none|bf16|fp16] [--sizes 224 512] [--batch 1] [--repeat 3]
        [--train-size 512] [--no-memory] [--compile [--freezing]]
        [--json out.json]

    # to compare with the paper's A100 throughput (docs/specification.md)
    python tools/benchmark/backbone.py --device cuda --batch 64 --sizes 224 \
        --train-size 0

Backbones (classification form, 1000-class head left out):

* ``pelk-t``: PeLK-T as trained (BN branches, positional embeddings), and
  ``pelk-t-deploy`` after ``switch_to_deploy()`` (BNs folded, the 5x5 branch
  merged, W * h frozen);
* ``convnext-t``: mmpretrain's ConvNeXt-T (7x7 depthwise kernels), and
  ``convnext-ARCH`` any other of its archs (``convnext-atto``, ...);
* ``slak-t-stripes``: ConvNeXt-T at SLaK's widths (x1.3) whose depthwise
  convs are SLaK's stripe form with BN (Kx5 + 5xK + 5x5, K = 51/49/47/13
  per stage), dense (no sparsity), run by torch's native depthwise convs:
  the shape of SLaK-T, not its weights, and not SLaK's own implicit-GEMM
  depthwise CUDA kernels.

``--compile`` adds each model under ``torch.compile`` (``NAME+compiled``,
static shapes, inductor), compiled by a call before the timed ones;
``--freezing`` sets inductor's ``freezing`` for them (inference graphs take
the parameters as constants: folded, and linear weights pre-packed for
oneDNN on the CPU), the setting for deployment.

It prints images/s for inference at each size (best of ``--repeat``, the
models timed in turn, one call each per repeat, so that a shared machine's
drift moves them alike), the time of one training step (forward, backward,
AdamW step) at ``--train-size`` (0: none), each with its ratio to
ConvNeXt-T (and a compiled model's to its eager self), and the
peak extra memory of one call (on the CPU: growth of the resident set,
sampled in a separate process; on CUDA: torch's peak allocation). On CUDA
every call is timed to the end of its kernels. ``--amp`` runs the forward
passes under ``torch.autocast`` (fp16 training with a gradient scaler).
"""
import argparse
import contextlib
import functools
from typing import Callable, Dict

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmpretrain.models.backbones import ConvNeXt

from pelk_mm.models import PeLK
from probes import (add_common_arguments, best_times, describe,
                    memory_for_tables, parse_arguments, peak_memory_mb,
                    report_memory, write_json)

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
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
    if name.startswith('convnext-'):
        # convnext-t, or any of mmpretrain's ConvNeXt archs: convnext-atto...
        arch = name[len('convnext-'):]
        return ConvNeXt(arch={'t': 'tiny'}.get(arch, arch))
    if name == 'slak-t-stripes':
        return slak_t()
    raise ValueError(name)


def autocast(args):
    if args.amp == 'none':
        return contextlib.nullcontext()
    return torch.autocast(args.device.type, dtype=AMP_DTYPES[args.amp])


def measure(args, models: Dict[str, nn.Module], memory: bool) -> Dict:
    """{case: {model: seconds or MB}}; cases 'infer@SIZE', 'train@SIZE'.
    The models of a case are timed in turn, one call each per repeat."""
    results = {}
    device = args.device

    def probe(calls: Dict[str, Callable]) -> Dict[str, float]:
        if args.compile:
            for call in calls.values():
                call()  # compiles a compiled model: not a warm-up to time
        if memory:
            peaks = {}
            for name, call in calls.items():
                call()  # warm-up
                peaks[name] = peak_memory_mb(call, device=device)
            return peaks
        return best_times(calls, args.repeat, device)

    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size, device=device)

        def infer(model, x=x):
            model.eval()
            with torch.no_grad(), autocast(args):
                return model(x)

        results[f'infer@{size}'] = probe({
            name: functools.partial(infer, model)
            for name, model in models.items()
        })
    if args.train_size:
        size = args.train_size
        x = torch.randn(args.batch, 3, size, size, device=device)
        steps = {}
        for name, model in models.items():
            if '-deploy' in name:
                continue  # deploy mode is for inference
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            scaler = torch.amp.GradScaler(
                device.type, enabled=args.amp == 'fp16')

            def step(model=model, optimizer=optimizer, scaler=scaler):
                model.train()
                optimizer.zero_grad()
                with autocast(args):
                    loss = model(x)[-1].float().mean()
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

            steps[name] = step
        results[f'train@{size}'] = probe(steps)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--models',
        nargs='+',
        default=['convnext-t', 'slak-t-stripes', 'pelk-t', 'pelk-t-deploy'])
    add_common_arguments(parser)
    parser.add_argument(
        '--amp',
        choices=['none', 'bf16', 'fp16'],
        default='none',
        help='autocast the forward passes to this dtype')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 512])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--train-size', type=int, default=512)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument(
        '--memory-only', action='store_true',
        help=argparse.SUPPRESS)  # the memory probe's run
    parser.add_argument(
        '--compile',
        action='store_true',
        help='also time each model under torch.compile (name+compiled)')
    parser.add_argument(
        '--freezing',
        action='store_true',
        help="with --compile: inductor's freezing (inference graphs fold "
        'the parameters in as constants and pre-pack the linear weights; '
        'for deployment)')
    args = parse_arguments(parser)
    if args.freezing:
        if not args.compile:
            parser.error('--freezing applies to --compile')
        from torch._inductor import config as inductor_config
        inductor_config.freezing = True
    torch.manual_seed(0)
    models = {name: build(name).to(args.device) for name in args.models}
    if args.compile:
        for name in args.models:
            # One graph per input size (static shapes); compiling happens
            # in the first call, before the timed ones (see measure).
            models[f'{name}+compiled'] = torch.compile(
                models[name], dynamic=False)

    def measure_memory():
        return measure(args, models, memory=True)

    if args.memory_only:
        report_memory(measure_memory())
        return
    memory = memory_for_tables(args, measure_memory)
    times = measure(args, models, memory=False)

    base = 'convnext-t' if 'convnext-t' in models else args.models[0]
    rows = [
        f'batch {args.batch}, '
        f'{"fp32" if args.amp == "none" else args.amp + " autocast"}, '
        f'{describe(args.device)}, best of {args.repeat}'
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
            eager = name[:-len('+compiled')]
            compiled = (f'  {seconds / by_model[eager]:>5.2f}x eager'
                        if name.endswith('+compiled') else '')
            rows.append(f'  {name:>22} {rate} {seconds * 1e3:>9.1f} ms '
                        f'{seconds / by_model[base]:>5.2f}x {base}  '
                        f'peak {peak:>6.0f} MB{compiled}')
    MMLogger.get_instance('pelk_mm', log_level='INFO').info('\n'.join(rows))
    rates = {
        case: {
            name: args.batch / s
            for name, s in by_model.items()
        }
        for case, by_model in times.items()
    }
    write_json(
        args.json,
        args.device,
        batch=args.batch,
        amp=args.amp,
        seconds=times,
        images_per_second=rates,
        peak_mb=memory)


if __name__ == '__main__':
    main()
