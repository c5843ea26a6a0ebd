"""Functional forms of the peripheral convolution: reference and fast paths.

All paths compute the same depthwise "same" cross-correlation (the semantics
of ``F.conv2d(x, kernel[:, None], padding=K // 2, groups=C)``) and, optionally,
the kernel-wise positional embedding term of Eq. 3:

    Y(x, y) = sum_{i,j} W(i, j) * (X(x + i, y + j) + h(i, j))

Border semantics of Eq. 3 (``pos_border``):

* ``'valid'`` (default): ``h`` is added only where the kernel overlaps the
  image, i.e. zero padding stays zero. The extra term is then
  ``conv(1_image, W * h)``: constant in the interior, position dependent
  within K // 2 of the border, which is where the embedding carries
  positional information (on maps smaller than the kernel: everywhere).
* ``'padded'``: ``h`` is also added at padded positions; the term reduces to
  the per-channel constant ``sum(W * h)`` (a bias).

Paths (``path``):

* ``'direct'``: the dense depthwise conv (fast for small K or tiny maps).
* ``'fft'``: an FFT convolution whose cost barely grows with K.
* ``'sat'``: summed-area tables: about k'^2 + 4k' operations per pixel,
  from the block weights; it needs the grid, so only
  :func:`peripheral_conv2d` with ``grid`` takes it. Eager on the CPU, the
  fused extension (:mod:`pelk_mm.ops.sat`); elsewhere, and wherever the
  graph is traced (``torch.compile``, ``torch.export``, ONNX export), the
  same algorithm in standard ops (:func:`grid_depthwise_conv_box_sums`).
* ``'triton'``: the same summed-area-table algorithm as Triton kernels
  (:mod:`pelk_mm.ops.triton_sat`): CUDA devices, or the CPU under
  ``TRITON_INTERPRET=1``. The first use per process and shape class is
  checked against the FFT path; a kernel that fails to compile or disagrees
  falls back to FFT with one warning.
* ``'auto'``: picks one from a cost model per device type (see
  :func:`choose_path`), or the one ``PELK_MM_PATH`` names.
"""
import math
import os
from functools import lru_cache
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .grid import expand_by_grid

PATHS = ('auto', 'direct', 'fft', 'sat', 'triton')
POS_BORDERS = ('valid', 'padded')


class PathCosts(NamedTuple):
    """Constants of the automatic choice on one device type, in
    multiply-adds of the direct conv.

    Attributes:
        fft_unit (float): One ``N log2 N`` unit of the FFT path.
        fast_direct_max_kernel (int): Up to this K the direct conv has a
            specialised inference kernel...
        fast_direct_speedup (float): ...that is this much faster per
            multiply-add (its backward is not).
        sat_unit (float, optional): One operation (of ``k'^2 + 4k'`` per
            pixel) of the fused summed-area-table path; None where it does
            not run.
        sat_training_factor (float): How much more its backward weighs
            relative to the FFT path's.
        triton_unit (float, optional): One operation (of ``k'^2 + 4k'``
            per pixel) of the Triton kernels; None where they do not run.
    """
    fft_unit: float
    fast_direct_max_kernel: int
    fast_direct_speedup: float
    sat_unit: Optional[float]
    sat_training_factor: float = 1.0
    triton_unit: Optional[float] = None


PATH_COSTS = {
    # Measured with tools/benchmark/peripheral_conv.py on a 2-core x86 CPU
    # (torch 2.12, interleaved runs): oneDNN has a specialised depthwise
    # kernel up to K = 13, ~20x faster per multiply-add.
    'cpu': PathCosts(2.0, 13, 20.0, 0.2, 1.1),
    # NOT MEASURED: no GPU has run pelk_mm yet. A reasoned default until
    # tools/benchmark/peripheral_conv.py --device cuda is run: cuDNN's
    # depthwise convs are efficient for small kernels only (RepLKNet's
    # finding), while cuFFT's cost is dominated by memory traffic and kernel
    # launches (several per call), so one N log2 N unit is priced higher
    # than on the CPU; the summed-area-table extension is CPU code. The
    # Triton kernels read and write about 6k' float32 values per pixel
    # over four launches: one of their operations is priced as one direct
    # multiply-add, so that they win on the small maps of late stages and
    # FFT keeps the large early ones until measured.
    'cuda': PathCosts(4.0, 13, 8.0, None, triton_unit=1.0),
}

# PELK_MM_PATH=direct|fft|sat|triton makes every 'auto' choice that path
# (read at import); unset or 'auto': the cost model above.
PATH_OVERRIDE = os.environ.get('PELK_MM_PATH', 'auto') or 'auto'
# PELK_MM_TRITON=0 keeps 'auto' from choosing the Triton kernels.
TRITON_ALLOWED = os.environ.get('PELK_MM_TRITON', '1') != '0'


@lru_cache(maxsize=None)
def fft_size(n: int) -> int:
    """Smallest 2-, 3-, 5- or 7-smooth integer >= n (fast FFT lengths)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def choose_path(kernel_size: int,
                height: int,
                width: int,
                requires_grad: bool = False,
                num_cells: Optional[int] = None,
                device: Optional[torch.device] = None) -> str:
    """Pick the cheapest path for one feature map.

    The direct conv costs ``K^2 * H * W`` multiply-adds per plane (less in
    inference up to ``fast_direct_max_kernel``). The FFT path costs about
    ``N log2 N`` units for ``N = Nh * Nw >= (H + K//2) * (W + K//2)`` per
    plane, for any K. The summed-area-table path (offered when ``num_cells``
    k' is given, the device is the CPU and the extension is already built:
    ``make install`` builds it, and asking for a cost never does) costs about
    ``k'^2 + 4k'`` units per pixel. The constants are per device type
    (:data:`PATH_COSTS`: measured on the CPU, a reasoned default on CUDA).
    ``PELK_MM_PATH`` in the environment overrides the choice.

    Args:
        kernel_size (int): Kernel size K.
        height (int): Map height H.
        width (int): Map width W.
        requires_grad (bool): Whether a backward pass will follow.
        num_cells (int, optional): k', the cells of the sharing grid.
        device (torch.device, optional): Where the map lives (CPU if None).

    Returns:
        str: ``'direct'``, ``'fft'``, ``'sat'`` or ``'triton'``.

    Raises:
        ValueError: If ``PELK_MM_PATH`` names no path, or a path that cannot
            run here.
    """
    device_type = 'cpu' if device is None else torch.device(device).type
    # The legacy (TorchScript) tracer hands sizes over as 0-d tensors; the
    # choice is made once, for the traced size.
    height, width = int(height), int(width)
    if PATH_OVERRIDE != 'auto':
        return _overridden_path(num_cells, device_type)
    costs_of = PATH_COSTS.get(device_type, PATH_COSTS['cpu'])
    pad = kernel_size // 2
    nh = fft_size(max(height + pad, kernel_size))
    nw = fft_size(max(width + pad, kernel_size))
    costs = {'direct': kernel_size * kernel_size * height * width}
    if kernel_size <= costs_of.fast_direct_max_kernel and not requires_grad:
        costs['direct'] /= costs_of.fast_direct_speedup
    costs['fft'] = costs_of.fft_unit * nh * nw * math.log2(nh * nw)
    if (num_cells is not None and costs_of.sat_unit is not None
            and device_type == 'cpu' and _sat_available()):
        costs['sat'] = costs_of.sat_unit * (num_cells**2 + 4 * num_cells) * \
            height * width * (
                costs_of.sat_training_factor if requires_grad else 1)
    if (num_cells is not None and costs_of.triton_unit is not None
            and TRITON_ALLOWED and _triton_available(device_type)):
        costs['triton'] = costs_of.triton_unit * (
            num_cells**2 + 4 * num_cells) * height * width
    return min(costs, key=costs.get)


def _overridden_path(num_cells: Optional[int], device_type: str) -> str:
    if PATH_OVERRIDE not in PATHS:
        raise ValueError(f'PELK_MM_PATH must be one of {PATHS}, got '
                         f'{PATH_OVERRIDE!r}')
    if PATH_OVERRIDE in ('sat', 'triton') and num_cells is None:
        raise ValueError(f"PELK_MM_PATH={PATH_OVERRIDE}: the "
                         f"'{PATH_OVERRIDE}' path works from block weights "
                         f"on a grid, which this dense depthwise conv has "
                         f"not; unset PELK_MM_PATH or choose direct/fft")
    if PATH_OVERRIDE == 'triton' and not _triton_available(device_type):
        raise ValueError(f'PELK_MM_PATH=triton: the Triton kernels run on '
                         f'CUDA devices (or on the CPU under '
                         f'TRITON_INTERPRET=1), this map is on '
                         f'{device_type}; choose direct, fft or sat')
    return PATH_OVERRIDE


def tracing() -> bool:
    """Whether the graph is being traced (``torch.compile``,
    ``torch.export``, the legacy ONNX exporter), where only standard ops
    may run: the fused extension is opaque to them."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _triton_available(device_type: str) -> bool:
    if tracing():
        return False
    from . import triton_sat
    return triton_sat.available_on(torch.device(device_type))


def _sat_available() -> bool:
    # The automatic choice prices the fused extension; in a traced graph
    # the FFT and direct paths are chosen instead.
    if tracing():
        return False
    from . import sat
    return sat.is_built()


def depthwise_conv_direct(x: torch.Tensor,
                          kernel: torch.Tensor) -> torch.Tensor:
    """Dense depthwise "same" conv.

    ``x``: (B, C, H, W), ``kernel``: (C, K, K).
    """
    return F.conv2d(
        x,
        kernel.unsqueeze(1).to(x.dtype),
        padding=kernel.shape[-1] // 2,
        groups=x.shape[1])


def depthwise_conv_fft(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise "same" cross-correlation computed with real FFTs.

    Equal to :func:`depthwise_conv_direct` up to floating-point rounding.
    The planes are zero-padded to ``N >= H + K // 2`` (enough to keep the
    circular wrap-around out of the kept window) and the kernel is stored
    centred at the origin, so that the product of spectra is the
    correlation. Half-precision inputs are computed in float32 and cast back
    (pocketfft has no half kernels; cuFFT only for powers of two).

    Args:
        x (Tensor): Input of shape (B, C, H, W).
        kernel (Tensor): Depthwise kernel of shape (C, K, K), K odd.

    Returns:
        Tensor: Output of shape (B, C, H, W), dtype of ``x``.
    """
    height, width = x.shape[-2:]
    size = kernel.shape[-1]
    pad = size // 2
    nh = fft_size(max(height + pad, size))
    nw = fft_size(max(width + pad, size))
    compute_dtype = torch.promote_types(x.dtype, torch.float32)
    x_f = torch.fft.rfft2(x.to(compute_dtype), s=(nh, nw))
    centred = F.pad(kernel.to(compute_dtype), (0, nw - size, 0, nh - size))
    centred = centred.roll(shifts=(-pad, -pad), dims=(-2, -1))
    k_f = torch.fft.rfft2(centred)
    y = torch.fft.irfft2(x_f * k_f.conj(), s=(nh, nw))
    return y[..., :height, :width].to(x.dtype)


def depthwise_conv(x: torch.Tensor,
                   kernel: torch.Tensor,
                   path: str = 'auto') -> torch.Tensor:
    """Depthwise "same" conv through the path named (or chosen) by ``path``."""
    if path == 'auto':
        requires_grad = torch.is_grad_enabled() and (x.requires_grad
                                                     or kernel.requires_grad)
        path = choose_path(
            kernel.shape[-1],
            x.shape[-2],
            x.shape[-1],
            requires_grad,
            device=x.device)
    if path == 'direct':
        return depthwise_conv_direct(x, kernel)
    if path == 'fft':
        return depthwise_conv_fft(x, kernel)
    if path in ('sat', 'triton'):
        raise ValueError(f"the '{path}' path works from the block weights "
                         f"and the grid: call grid_depthwise_conv (or "
                         f"peripheral_conv2d with grid=...)")
    raise ValueError(f'path must be one of {PATHS}, got {path!r}')


def grid_depthwise_conv(x: torch.Tensor,
                        weight: torch.Tensor,
                        grid: torch.Tensor,
                        path: str = 'auto',
                        kernel_size: Optional[int] = None) -> torch.Tensor:
    """Depthwise "same" conv of a kernel given by block weights on a grid.

    Args:
        x (Tensor): Input (B, C, H, W).
        weight (Tensor): Block weights (C, k', k').
        grid (Tensor): int64 cell widths (k',), summing to K.
        path (str): ``'auto'``, ``'direct'``, ``'fft'``, ``'sat'`` or
            ``'triton'``.
        kernel_size (int, optional): K, if known (see
            :func:`~pelk_mm.ops.grid.expand_by_grid`). Defaults to the sum
            of ``grid``.

    Returns:
        Tensor: (B, C, H, W).
    """
    if kernel_size is None:
        kernel_size = int(grid.sum())
    if path == 'auto':
        requires_grad = torch.is_grad_enabled() and (x.requires_grad
                                                     or weight.requires_grad)
        path = choose_path(kernel_size, x.shape[-2], x.shape[-1],
                           requires_grad, len(grid), x.device)
    if path == 'triton' and not tracing():
        from .triton_sat import grid_depthwise_conv_checked

        def fft(x, weight):
            return grid_depthwise_conv(x, weight, grid, 'fft', kernel_size)

        return grid_depthwise_conv_checked(x, weight, grid, kernel_size, fft)
    if path in ('sat', 'triton'):
        if x.device.type != 'cpu' or tracing():
            return grid_depthwise_conv_box_sums(x, weight, grid, kernel_size)
        from .sat import grid_depthwise_conv_sat
        return grid_depthwise_conv_sat(x, weight, grid)
    # Expanded in float32 (or better): the gradient of a block weight sums
    # the gradients of up to (K / 4)^2 taps, which half precision would
    # accumulate with a rounding per tap; this way it is rounded once.
    compute_dtype = torch.promote_types(weight.dtype, torch.float32)
    kernel = expand_by_grid(weight.to(compute_dtype), grid, kernel_size)
    return depthwise_conv(x, kernel, path)


def grid_depthwise_conv_box_sums(
        x: torch.Tensor,
        weight: torch.Tensor,
        grid: torch.Tensor,
        kernel_size: Optional[int] = None) -> torch.Tensor:
    """The summed-area-table algorithm of the ``'sat'`` path in standard
    ops (cumulative sums, gathers with static indices, a batched matmul).

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
    mix = F.pad(weight, (1, 0)) - F.pad(weight, (0, 1))  # (C, k', k' + 1)
    reads = reads.transpose(2, 3).reshape(batch, channels, num_cells + 1, -1)
    mixed = torch.matmul(mix.to(compute_dtype), reads)
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


def _window_bounds(length: int, size: int, device) -> tuple:
    """Kernel rows [lo, hi) that overlap the image, for every output row."""
    pad = size // 2
    pos = torch.arange(length, device=device)
    lo = (pad - pos).clamp(min=0)
    hi = (length + pad - pos).clamp(max=size)
    return lo, hi


def positional_term(pos_kernel: torch.Tensor,
                    height: int,
                    width: int,
                    border: str = 'valid') -> torch.Tensor:
    """The positional-embedding term of Eq. 3 for an ``H x W`` map.

    Args:
        pos_kernel (Tensor): ``W * h``, the large kernel times the positional
            embedding, shape (C, K, K).
        height (int): Map height H.
        width (int): Map width W.
        border (str): ``'valid'`` or ``'padded'`` (see the module docstring).

    Returns:
        Tensor: Shape (C, H, W) for ``'valid'``; (C, 1, 1) for ``'padded'``.
        It broadcasts over the batch.
    """
    if border == 'padded':
        return pos_kernel.sum(dim=(-2, -1), keepdim=True)
    if border != 'valid':
        raise ValueError(f'pos_border must be one of {POS_BORDERS}, '
                         f'got {border!r}')
    # conv(1_image, W * h) with a summed-area table of W * h: each output
    # pixel sums the rectangle of kernel taps that fall inside the image.
    size = pos_kernel.shape[-1]
    table = F.pad(pos_kernel.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    row_lo, row_hi = _window_bounds(height, size, pos_kernel.device)
    col_lo, col_hi = _window_bounds(width, size, pos_kernel.device)
    rows = table.index_select(-2, row_hi) - table.index_select(-2, row_lo)
    return rows.index_select(-1, col_hi) - rows.index_select(-1, col_lo)


def peripheral_conv2d(x: torch.Tensor,
                      kernel: torch.Tensor,
                      pos_kernel: Optional[torch.Tensor] = None,
                      pos_border: str = 'valid',
                      bias: Optional[torch.Tensor] = None,
                      path: str = 'auto',
                      grid: Optional[torch.Tensor] = None,
                      kernel_size: Optional[int] = None) -> torch.Tensor:
    """Peripheral convolution, fast paths.

    Args:
        x (Tensor): Input of shape (B, C, H, W).
        kernel (Tensor): The expanded kernel, (C, K, K); or, with ``grid``,
            the block weights, (C, k', k').
        pos_kernel (Tensor, optional): ``W * h``, the large kernel times the
            positional embedding, (C, K, K).
        pos_border (str): Border semantics of h; see the module docstring.
        bias (Tensor, optional): Per-channel bias of shape (C, ).
        path (str): ``'auto'``, ``'direct'``, ``'fft'`` or (with ``grid``)
            ``'sat'``.
        grid (Tensor, optional): int64 cell widths (k',) of the sharing
            grid when ``kernel`` holds block weights.
        kernel_size (int, optional): K, with ``grid``, if known.

    Returns:
        Tensor: Output of shape (B, C, H, W).
    """
    out = depthwise_conv(x, kernel, path) if grid is None else \
        grid_depthwise_conv(x, kernel, grid, path, kernel_size)
    if pos_kernel is not None:
        term = positional_term(pos_kernel, *x.shape[-2:], pos_border)
        out = out + term.to(out.dtype)
    if bias is not None:
        out = out + bias.to(out.dtype).view(-1, 1, 1)
    return out


def peripheral_conv2d_reference(
        x: torch.Tensor,
        kernel: torch.Tensor,
        pos_kernel: Optional[torch.Tensor] = None,
        pos_border: str = 'valid',
        bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference implementation: plain ``F.conv2d`` calls, no shortcuts.

    Arguments as for :func:`peripheral_conv2d`. The positional term is a
    second depthwise conv, of the indicator of the image, with the kernel
    ``W * h`` (``'valid'``), or the sum of ``W * h`` (``'padded'``).
    """
    channels, size = kernel.shape[0], kernel.shape[-1]
    out = F.conv2d(x, kernel.unsqueeze(1), padding=size // 2, groups=channels)
    if pos_kernel is not None:
        if pos_border == 'valid':
            ones = x.new_ones((1, channels) + x.shape[-2:])
            out = out + F.conv2d(
                ones,
                pos_kernel.unsqueeze(1),
                padding=size // 2,
                groups=channels)
        elif pos_border == 'padded':
            out = out + pos_kernel.sum(dim=(-2, -1)).view(-1, 1, 1)
        else:
            raise ValueError(f'pos_border must be one of {POS_BORDERS}, '
                             f'got {pos_border!r}')
    if bias is not None:
        out = out + bias.view(-1, 1, 1)
    return out
