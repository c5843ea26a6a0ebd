"""Every path that runs natively on a GPU against the float64 dense conv at
the shapes PeLK's stages give it at 224 (the peripheral conv's channels,
batch 2), with a positional term and a bias, in fp32, bf16 and fp16: the
output and both gradients, each within the path's declared tolerance.
Marked ``gpu`` (``tools/gpu/check.sh`` runs it first); on the CPU the same
comparisons run at smaller sizes in the tests of each path."""
import functools
import sys
from pathlib import Path

import pytest
import torch
from conftest import native_paths

from pelk_mm.models import PeLK
from pelk_mm.ops import (expand_by_grid, paths, peripheral_conv2d,
                         peripheral_conv2d_reference, sharing_grid)
from pelk_mm.ops.grid import grid_tensor

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
STAGES = [(arch, stage) for arch in PeLK.arch_settings for stage in range(4)]


@functools.lru_cache(maxsize=None)
def stage_shapes(arch: str) -> tuple:
    """The peripheral conv of each stage of ``arch`` at 224 (what the
    benchmarks time per stage), read off the built model once per arch."""
    sys.path.insert(
        0, str(Path(__file__).resolve().parents[3] / 'tools' / 'benchmark'))
    try:
        from stage_shapes import peripheral_conv_shapes
    finally:
        sys.path.pop(0)
    return tuple(peripheral_conv_shapes(arch, 224))


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('path', native_paths('cuda'))
@pytest.mark.parametrize(
    'arch, stage', STAGES, ids=[f'{a}-stage{s + 1}' for a, s in STAGES])
def test_each_path_is_within_its_tolerance_at_the_stage_shapes(
        arch, stage, path, dtype):
    device = torch.device('cuda')
    shape = stage_shapes(arch)[stage]
    k, channels = shape['kernel_size'], shape['channels']
    grid = grid_tensor(sharing_grid(k, shape['center_size']), device)
    torch.manual_seed(k)
    # The reference convolves the inputs as rounded to the dtype.
    x = torch.randn(2, channels, shape['size'],
                    shape['size']).to(DTYPES[dtype]).to(device)
    w = (torch.randn(channels, len(grid), len(grid)) / k).to(
        DTYPES[dtype]).to(device)
    # A positional term and a bias: the addend the paths add (the Triton
    # kernels in their last step).
    pos = torch.randn(channels, k, k, device=device) / k**2
    bias = torch.randn(channels, device=device)
    x64, w64 = (t.double().requires_grad_() for t in (x, w))
    expected = peripheral_conv2d_reference(x64, expand_by_grid(w64, grid, k),
                                           pos.double(), 'valid',
                                           bias.double())
    grad_out = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (x64, w64), grad_out)
    xs, ws = (t.clone().requires_grad_() for t in (x, w))
    out = peripheral_conv2d(
        xs, ws, pos, bias=bias, path=path, grid=grid, kernel_size=k)
    grads = torch.autograd.grad(out, (xs, ws), grad_out.to(x.dtype))
    conv = paths.get(path)
    tolerance = conv.tolerance.get(x.dtype, conv.tolerance[torch.float32])
    for part, got, want in zip(('output', 'input gradient', 'weight gradient'),
                               (out, *grads), (expected, *expected_grads)):
        error = paths.relative_error(got, want)
        assert error <= tolerance, f'{part}: {error:.1e} > {tolerance:.0e}'
