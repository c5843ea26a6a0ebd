"""``'box_sums'``: the summed-area-table algorithm in standard ops
(cumulative sums, gathers with indices built from the shapes, a batched
matmul): about k'^2 + 4k' operations per pixel, traceable, so it is what
compiled and exported graphs run for the summed-area tables (and where
the fused CPU extension and the Triton kernels cannot run)."""
from typing import Optional

import torch
import torch.nn.functional as F

from .base import SummedAreaPath


def grid_depthwise_conv_box_sums(
        x: torch.Tensor,
        weight: torch.Tensor,
        grid: torch.Tensor,
        kernel_size: Optional[int] = None) -> torch.Tensor:
    """The summed-area-table algorithm (that of the ``'sat'`` and
    ``'triton'`` paths) in standard ops (cumulative sums, gathers with
    indices built from the shapes, a batched matmul).

    The kernel is constant on the blocks of the grid (cell ``a`` covers taps
    ``[s[a], s[a + 1])``), so with prefix sums along the rows, the sum of
    the input under one column block is two reads; ``Z_a = sum_b w[a, b]
    * box_b`` mixes them (k' (k' + 1) multiply-adds per pixel, the block
    differences folded into the weights), and prefix sums of each ``Z_a``
    down the columns give its row block in two reads more. Prefix sums run
    along one axis at a time (at most W or H terms), which keeps float32
    rounding at the level of the direct conv's; the zero padding is a clamp
    of the read positions, so no padded copy of a large tensor is made.
    Every index is built from the shapes and the grid by tensor ops, so the
    graph takes dynamic map sizes. Differentiable by autograd.

    Args:
        x (Tensor): Input (B, C, H, W).
        weight (Tensor): Block weights (C, k', k').
        grid (Tensor): int64 cell widths (k', ), summing to the odd K.
        kernel_size (int, optional): K, if known.

    Returns:
        Tensor: (B, C, H, W), equal to the dense conv of the expanded
        kernel up to rounding; dtype of ``x`` (computed in float32 or
        better).
    """
    if kernel_size is None:
        kernel_size = int(grid.sum())
    # Autocast would run the mix's matmul of prefix sums in half precision
    # (1e-2 of the largest output in fp16, 9e-2 in bf16 at K = 51, 128x128,
    # input mean 1): the whole algorithm is float32 or better inside.
    with torch.autocast(x.device.type, enabled=False):
        return _box_sums(x, weight, grid, kernel_size)


def _box_sums(x: torch.Tensor, weight: torch.Tensor, grid: torch.Tensor,
              kernel_size: int) -> torch.Tensor:
    batch, channels, height, width = x.shape
    num_cells = weight.shape[-1]
    compute_dtype = torch.promote_types(x.dtype, torch.float32)
    # Cell a covers input offsets [edges[a], edges[a + 1]) from the output
    # pixel; reads outside the map are clamped onto the prefix sums' ends,
    # which is the zero padding.
    edges = F.pad(grid.cumsum(0), (1, 0)) - kernel_size // 2
    # 1. Exclusive prefix sums along the rows (a zero first column), and a
    #    zero first row that step 2 carries into an exclusive column sum.
    pre = F.pad(x.to(compute_dtype), (1, 0, 1, 0)).cumsum(-1)
    columns = edges[:, None] + torch.arange(width, device=x.device)
    reads = pre.index_select(-1, columns.clamp(0, width).flatten())
    reads = reads.view(batch, channels, height + 1, num_cells + 1, width)
    # 2. Z_a = sum_b w[a, b] * box_b = sum_j (w[a, j - 1] - w[a, j]) pre_j.
    # (C, k', k' + 1), differenced in float32: half-precision block weights
    # would round each difference (and its gradient) once more.
    weight = weight.to(compute_dtype)
    mix = F.pad(weight, (1, 0)) - F.pad(weight, (0, 1))
    reads = reads.transpose(2, 3).reshape(batch, channels, num_cells + 1, -1)
    mixed = torch.matmul(mix, reads)
    # 3. Prefix sums of each Z_a down the columns; its row block for output
    #    row u is two reads, at flat rows a (H + 1) + u + edges[a (+ 1)].
    rows = mixed.view(batch, channels, num_cells, height + 1, width)
    rows = rows.cumsum(-2).reshape(batch, channels, -1, width)
    starts = torch.arange(num_cells, device=x.device)[:, None] * (height + 1)
    upto = torch.arange(height, device=x.device)
    hi = starts + (edges[1:, None] + upto).clamp(0, height)
    lo = starts + (edges[:-1, None] + upto).clamp(0, height)
    out = rows.index_select(-2, hi.flatten()) - \
        rows.index_select(-2, lo.flatten())
    out = out.view(batch, channels, num_cells, height, width).sum(2)
    return out.to(x.dtype)


class BoxSumsPath(SummedAreaPath):
    name = 'box_sums'
    summary = ('summed-area tables in standard ops (traceable; about '
               "k'^2 + 4k' operations per pixel)")
    costs = {
        # One of the k'^2 + 4k' operations per pixel, in the units of
        # 'fft': tools/benchmark/peripheral_conv.py --shape 2 46 64 64
        # --kernels 13 51 101 on a 2-core x86 CPU gave 2.8, 3.9 and 2.8
        # (forward; 7-17x the FFT path's time). Its k' planes of float32
        # intermediates go through memory, which the fused extension
        # avoids, so on the CPU it is chosen only where nothing faster can
        # run.
        'cpu': 3.33,
        # Not offered on CUDA until measured (tools/benchmark/
        # peripheral_conv.py --device cuda): there the Triton kernels are
        # the summed-area tables, and a reasoned guess would move choices
        # that are measured nowhere.
        'cuda': None,
    }

    def run(self, x, weight, grid, kernel_size):
        return grid_depthwise_conv_box_sums(x, weight, grid, kernel_size)
