"""The kernels of the ``'triton'`` path (:mod:`.triton`): the
summed-area-table algorithm of the fused CPU extension (``'sat'``) and its
standard-op form (``'box_sums'``), as two single-pass Triton kernels that
keep every intermediate on chip. Each program owns one plane (a batch item
and a channel) and a strip of ``BLOCK_X`` output columns, and streams down
the rows; it reads the input (and, for the weight gradient, the output
gradient) and writes its result, nothing else.

Forward (``_conv_rows``; the input gradient is the same kernel on the
output gradient with the kernel flipped). With the cell edges ``e_0 <
... < e_k'`` (cell ``a`` covers input offsets ``[e_a, e_(a+1))``), row
prefix sums ``P_r`` and the block weights ``w`` differenced along both
axes into ``M`` ((k' + 1)^2, zero beyond the blocks)::

    Y[y + 1] = Y[y] + sum_j D_j[y + e_j],
    D_j[r](x) = sum_i M[j, i] P_r(x + e_i)

(the difference of the summed-area form of ``Y[y + 1]`` and ``Y[y]``, a
sum over the k' + 1 rows where the cell edges move). Each step of the
stream reads those rows of the strip's window (``BLOCK_X + K`` columns),
prefix-sums them along the row in registers, gathers the k' + 1 column
edges of each (``tl.gather``) and adds their mix to the running output
row: (k' + 1)^2 multiply-adds per pixel, however large K is. Rows outside
the map are masked loads (the zero padding). The stream starts at
``Y[0]``, the same mix of the column sums of the rows ``[0, e_j)`` (the
summed-area table at those rows), which reads each of the first K - K // 2
input rows once: H - 1 steps per map, not H + K // 2. The row sums span
one window and the running sum is the output itself (no prefix over H
grows in it): float32 rounding grows with the steps, not with the sums'
size. The last step of each row adds an optional addend (a positional
term, a bias) before the one rounding to the output's dtype, and the
output may be a channel slice of a larger map (strides).

Weight gradient (``_weight_grad_rows``): ``dL/dw[a, b] = sum over pixels of
G_a * B_b``, with ``B_b`` the input's column boxes of cell ``b`` (two
gathers of the row prefix) and ``G_a`` the output gradient's boxes over the
rows ``(r - e_(a+1), r - e_a]``, a sliding sum (one row in, one out per
step: bounded, no prefix over H). Each step adds ``G B^T`` (a ``tl.dot`` in
IEEE float32) to a k' x k' accumulator per program; the programs' partial
sums are added over the batch and strips in float32.

Both kernels are registered as torch custom ops with
``torch.library.triton_op`` (``pelk_mm::triton_sat_conv``,
``pelk_mm::triton_sat_conv_weight_grad``), with autograd, so that
``torch.compile`` keeps them in its graphs (inductor launches and fuses
around them) and ``torch.export`` records them.

Triton compiles the kernels at run time for the GPU (no nvcc at install).
Under ``TRITON_INTERPRET=1`` (set before triton is imported) they run on
CPU tensors through Triton's interpreter, which is how the tests check them
where no GPU is.
"""
import contextlib
import warnings
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake
from torch.library import triton_op, wrap_triton

from ..torch_features import is_compiling
from . import triton_env
from .triton_env import interpreted

#: The widest strip of output columns a program computes.
MAX_BLOCK_X = 128


@triton.jit
def _mixed_edges(rows, weights, edges_ptr, num_edges, half, has_edge, lanes,
                 BLOCK_E: tl.constexpr, BLOCK_X: tl.constexpr):
    """``sum_j D_j`` of the module docstring for the k' + 1 window rows
    ``rows`` (BLOCK_E, BLOCK_WINDOW): each prefix-summed along the row,
    read at the k' + 1 column edges and mixed by ``M``
    -> (BLOCK_X, )."""
    prefix = tl.cumsum(rows, axis=1)
    step = tl.zeros((BLOCK_E, BLOCK_X), dtype=tl.float32)
    for i in range(0, num_edges):
        at = lanes + tl.load(edges_ptr + i) + half
        reads = tl.gather(
            prefix, tl.broadcast_to(at[None, :], (BLOCK_E, BLOCK_X)), axis=1)
        mix = tl.load(weights + i, mask=has_edge, other=0.)
        step += mix[:, None] * reads
    return tl.sum(step, axis=0)


@triton.jit
def _store_row(out, y, target, soh, addend, sah, lane_ok,
               HAS_ADDEND: tl.constexpr):
    """Row ``y`` of the output: ``out`` (+ the addend's row), rounded
    once to the output's dtype."""
    if HAS_ADDEND:
        out = out + tl.load(
            addend + y * sah, mask=lane_ok, other=0.).to(tl.float32)
    tl.store(target + y * soh, out.to(target.dtype.element_ty), mask=lane_ok)


@triton.jit
def _conv_rows(x_ptr, m_ptr, edges_ptr, add_ptr, out_ptr, channels, height,
               width, num_edges, half, warm_rows, sxb, sxc, sxh, sxw, sac, sah,
               saw, sob, soc, soh, sow, HAS_ADDEND: tl.constexpr,
               BLOCK_X: tl.constexpr, BLOCK_WINDOW: tl.constexpr,
               BLOCK_E: tl.constexpr):
    """Y[p, :, strip] of the module docstring, streamed down the rows,
    plus ``add`` (C, H, W) of any strides (0 where it broadcasts)
    where ``HAS_ADDEND``, written into ``out`` of any strides.

    ``m`` (C, k' + 1, k' + 1) float32, ``edges`` (k' + 1, ) int32;
    ``half`` = K // 2; ``warm_rows`` = min(K - K // 2, H), the input
    rows that reach Y[0]. Window column ``t`` holds input column ``x0 -
    half - 1 + t`` (column 0 is kept zero, so that ``P[t]`` is the
    exclusive prefix sum at column ``x0 - half + t``).
    """
    plane = tl.program_id(0)
    batch = (plane // channels).to(tl.int64)
    channel = plane % channels
    x0 = tl.program_id(1) * BLOCK_X
    js = tl.arange(0, BLOCK_E)
    has_edge = js < num_edges
    edges = tl.load(edges_ptr + js, mask=has_edge, other=0)
    ts = tl.arange(0, BLOCK_WINDOW)
    cols = x0 - half - 1 + ts
    col_ok = (ts > 0) & (cols >= 0) & (cols < width)
    lanes = tl.arange(0, BLOCK_X)
    lane_ok = x0 + lanes < width
    source = x_ptr + batch * sxb + channel.to(tl.int64) * sxc
    target = out_ptr + batch * sob + channel.to(tl.int64) * soc + \
        (x0 + lanes) * sow
    addend = add_ptr + channel.to(tl.int64) * sac + (x0 + lanes) * saw
    weights = m_ptr + channel * num_edges * num_edges + js * num_edges
    # Y[0] at once: the same mix, of the input's column sums over the
    # rows [0, e_j) (the summed-area table at row e_j) instead of the
    # rows e_j, one load per input row instead of K // 2 + 1 steps.
    sums = tl.zeros((BLOCK_E, BLOCK_WINDOW), dtype=tl.float32)
    for r in range(0, warm_rows):
        values = tl.load(
            source + r * sxh + cols * sxw, mask=col_ok,
            other=0.).to(tl.float32)
        sums += tl.where((r < edges)[:, None], values[None, :], 0.)
    out = _mixed_edges(sums, weights, edges_ptr, num_edges, half, has_edge,
                       lanes, BLOCK_E, BLOCK_X)
    _store_row(out, 0, target, soh, addend, sah, lane_ok, HAS_ADDEND)
    for y in range(1, height):
        # Y[y] = Y[y - 1] + sum_j D_j[y - 1 + e_j].
        rows = y - 1 + edges
        ok = (has_edge & (rows >= 0) & (rows < height))[:, None] & \
            col_ok[None, :]
        values = tl.load(
            source + rows[:, None].to(tl.int64) * sxh + cols[None, :] * sxw,
            mask=ok,
            other=0.).to(tl.float32)
        out += _mixed_edges(values, weights, edges_ptr, num_edges, half,
                            has_edge, lanes, BLOCK_E, BLOCK_X)
        _store_row(out, y, target, soh, addend, sah, lane_ok, HAS_ADDEND)


@triton.jit
def _weight_grad_rows(x_ptr, g_ptr, edges_ptr, part_ptr, channels, height,
                      width, num_cells, half, sxb, sxc, sxh, sxw, sgb, sgc,
                      sgh, sgw, BLOCK_X: tl.constexpr,
                      BLOCK_WINDOW: tl.constexpr, BLOCK_A: tl.constexpr):
    """part[p, strip] = sum over the strip's pixels of G B^T (the
    module docstring), (BLOCK_A, BLOCK_A) float32."""
    plane = tl.program_id(0)
    strip = tl.program_id(1)
    batch = (plane // channels).to(tl.int64)
    channel = (plane % channels).to(tl.int64)
    x0 = strip * BLOCK_X
    cells = tl.arange(0, BLOCK_A)
    has_cell = cells < num_cells
    lo = tl.load(edges_ptr + cells, mask=has_cell, other=0)
    hi = tl.load(edges_ptr + cells + 1, mask=has_cell, other=0)
    lanes = tl.arange(0, BLOCK_X)
    lane_ok = x0 + lanes < width
    ts = tl.arange(0, BLOCK_WINDOW)
    cols = x0 - half - 1 + ts
    col_ok = (ts > 0) & (cols >= 0) & (cols < width)
    inputs = x_ptr + batch * sxb + channel * sxc
    grads = g_ptr + batch * sgb + channel * sgc + (x0 + lanes) * sgw
    boxes = tl.zeros((BLOCK_A, BLOCK_X), dtype=tl.float32)
    acc = tl.zeros((BLOCK_A, BLOCK_A), dtype=tl.float32)
    lo_at = tl.broadcast_to(lanes[None, :] + lo[:, None] + half,
                            (BLOCK_A, BLOCK_X))
    hi_at = tl.broadcast_to(lanes[None, :] + hi[:, None] + half,
                            (BLOCK_A, BLOCK_X))
    # boxes[a] = the output gradient summed over rows (r - e_(a+1),
    # r - e_a]: zero for r < -half, one row in and one out per step.
    for r in range(-half, height):
        rows_in = r - lo
        rows_out = r - hi
        ok_in = (has_cell & (rows_in >= 0) & (rows_in < height))[:, None] \
            & lane_ok[None, :]
        ok_out = (has_cell & (rows_out >= 0) &
                  (rows_out < height))[:, None] & lane_ok[None, :]
        boxes += tl.load(
            grads + rows_in[:, None].to(tl.int64) * sgh, mask=ok_in,
            other=0.).to(tl.float32) - tl.load(
                grads + rows_out[:, None].to(tl.int64) * sgh,
                mask=ok_out,
                other=0.).to(tl.float32)
        if r >= 0:
            values = tl.load(
                inputs + r * sxh + cols * sxw, mask=col_ok,
                other=0.).to(tl.float32)
            prefix = tl.broadcast_to(
                tl.cumsum(values, axis=0)[None, :], (BLOCK_A, BLOCK_WINDOW))
            columns = tl.gather(prefix, hi_at, axis=1) - \
                tl.gather(prefix, lo_at, axis=1)
            acc += tl.dot(boxes, tl.trans(columns), input_precision='ieee')
    part = part_ptr + (plane * tl.num_programs(1) + strip) * \
        BLOCK_A * BLOCK_A
    tl.store(part + cells[:, None] * BLOCK_A + cells[None, :], acc)


def _next_power_of_2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


class Blocks(NamedTuple):
    """The compile-time block sizes of a call: with the dtype and the
    device, what selects a compiled kernel (Triton also specializes integer
    arguments that are 1 or multiples of 16)."""
    x: int  # output columns per program
    window: int  # window columns read per row (>= x + K)
    edges: int  # padded k' + 1 (forward)
    cells: int  # padded k' (weight gradient, >= 16 for tl.dot)

    @property
    def num_warps(self) -> int:
        return 8 if self.edges * self.window >= 4096 else 4


def block_sizes(width: int, kernel_size: int, num_cells: int) -> Blocks:
    """The blocks of a call on maps ``width`` wide with a K kernel of k'
    cells: a strip as wide as K (16 to :data:`MAX_BLOCK_X` columns, no
    wider than the map) keeps the window's halo at most about half of it."""
    columns = max(
        16,
        min(
            _next_power_of_2(kernel_size), MAX_BLOCK_X,
            _next_power_of_2(width)))
    return Blocks(columns, _next_power_of_2(columns + kernel_size),
                  _next_power_of_2(num_cells + 1),
                  max(16, _next_power_of_2(num_cells)))


def _launch(kernel, launch_grid, *args, **meta) -> None:
    """``kernel[launch_grid](*args, **meta)``, through ``wrap_triton`` so
    that graphs record it. Triton's interpreter (the tests' CPU runs) makes
    kernels that ``wrap_triton`` refuses: there the kernel is called
    directly, and not at all on fake tensors (a graph's shapes-only run)."""
    if not interpreted():
        wrap_triton(kernel)[launch_grid](*args, **meta)
    elif not any(is_fake(arg) for arg in args):
        kernel[launch_grid](*args, **meta)


def _register(name: str):
    """Register the function as the custom op ``name``: with
    ``torch.library.triton_op`` (inductor sees and launches the kernels,
    CUDA graphs capture them); under Triton's interpreter, whose kernels no
    graph can hold, as a plain custom op whose fake kernel is the function
    itself (:func:`_launch` launches nothing on fake tensors)."""

    def register(function):
        if not interpreted():
            return triton_op(name, mutates_args=())(function)
        op = torch.library.custom_op(name, mutates_args=())(function)
        op.register_fake(function)
        return op

    return register


def _edges(grid: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Cell a covers input offsets [e_a, e_(a+1)) from the output pixel."""
    return (F.pad(grid.cumsum(0), (1, 0)) - kernel_size // 2).to(torch.int32)


def _differenced(weight: torch.Tensor) -> torch.Tensor:
    """(C, k', k') block weights -> (C, k' + 1, k' + 1), differenced along
    both axes: the coefficients of the prefix sums at the cell edges."""
    weight = weight.float()
    mix = F.pad(weight, (1, 0)) - F.pad(weight, (0, 1))
    return (F.pad(mix, (0, 0, 1, 0)) - F.pad(mix, (0, 0, 0, 1))).contiguous()


def _addend_strides(addend: Optional[torch.Tensor],
                    x: torch.Tensor) -> Tuple[int, int, int]:
    """The (C, H, W) strides the kernel reads ``addend`` through: 0 along
    the axes it broadcasts over, (0, 0, 0) without one."""
    if addend is None:
        return (0, 0, 0)
    return addend.expand(x.shape[1:]).stride()


def launch_conv(x: torch.Tensor, weight: torch.Tensor, grid: torch.Tensor,
                kernel_size: int, addend: Optional[torch.Tensor],
                out: torch.Tensor) -> None:
    """Write the conv of ``x`` (+ ``addend``) into ``out``, both of any
    strides (a channel slice of a larger map is read and written where it
    lies)."""
    batch, channels, height, width = x.shape
    blocks = block_sizes(width, kernel_size, weight.shape[-1])
    half = kernel_size // 2
    _launch(
        _conv_rows, (batch * channels, triton.cdiv(width, blocks.x)),
        x,
        _differenced(weight),
        _edges(grid, kernel_size),
        x if addend is None else addend,
        out,
        channels,
        height,
        width,
        weight.shape[-1] + 1,
        half,
        min(kernel_size - half, height),
        *x.stride(),
        *_addend_strides(addend, x),
        *out.stride(),
        HAS_ADDEND=addend is not None,
        BLOCK_X=blocks.x,
        BLOCK_WINDOW=blocks.window,
        BLOCK_E=blocks.edges,
        num_warps=blocks.num_warps)


@_register('pelk_mm::triton_sat_conv')
def triton_sat_conv(x: torch.Tensor,
                    weight: torch.Tensor,
                    grid: torch.Tensor,
                    kernel_size: int,
                    addend: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The fused forward: x (B, C, H, W) of any strides, block weights
    (C, k', k'), grid (k', ) int64 on the device of ``x``, and an optional
    ``addend`` that broadcasts to (C, H, W) (a positional term, a bias)
    added in the kernel -> (B, C, H, W) of the dtype of ``x``, accumulated
    in float32."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    launch_conv(x, weight, grid, kernel_size, addend, out)
    return out


@_register('pelk_mm::triton_sat_conv_weight_grad')
def triton_sat_conv_weight_grad(grad_out: torch.Tensor, x: torch.Tensor,
                                grid: torch.Tensor,
                                kernel_size: int) -> torch.Tensor:
    """The gradient of :func:`triton_sat_conv` with respect to its block
    weights, summed over the batch: (C, k', k') float32."""
    batch, channels, height, width = x.shape
    num_cells = grid.shape[0]
    blocks = block_sizes(width, kernel_size, num_cells)
    strips = triton.cdiv(width, blocks.x)
    parts = torch.empty(
        batch,
        channels,
        strips,
        blocks.cells,
        blocks.cells,
        dtype=torch.float32,
        device=x.device)
    _launch(
        _weight_grad_rows, (batch * channels, strips),
        x,
        grad_out,
        _edges(grid, kernel_size),
        parts,
        channels,
        height,
        width,
        num_cells,
        kernel_size // 2,
        *x.stride(),
        *grad_out.stride(),
        BLOCK_X=blocks.x,
        BLOCK_WINDOW=blocks.window,
        BLOCK_A=blocks.cells,
        num_warps=4)
    return parts.sum((0, 2))[:, :num_cells, :num_cells]


def _forward(x: torch.Tensor,
             weight: torch.Tensor,
             grid: torch.Tensor,
             kernel_size: int,
             addend: Optional[torch.Tensor] = None,
             out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The conv of (B, C, H, W) ``x`` (+ ``addend``), (B, C, H, W) of its
    dtype: a new tensor, or ``out``, written in place."""
    if out is None:
        return triton_sat_conv(x, weight, grid, kernel_size, addend)
    launch_conv(x, weight, grid, kernel_size, addend, out)
    return out


def _weight_grad(x: torch.Tensor, grad_out: torch.Tensor, grid: torch.Tensor,
                 kernel_size: int) -> torch.Tensor:
    """dL/dw (C, k', k') float32, summed over the batch."""
    return triton_sat_conv_weight_grad(grad_out, x, grid, kernel_size)


def _gradients(x, weight, grid, grad_out, kernel_size, needs):
    """The input and block-weight gradients (None where not ``needs``)."""
    grad_x = grad_w = None
    if needs[0]:
        # The adjoint: the same conv with the kernel flipped.
        grad_x = _forward(grad_out, weight.flip((-2, -1)), grid.flip(0),
                          kernel_size)
    if needs[1]:
        grad_w = _weight_grad(x, grad_out, grid, kernel_size).to(weight.dtype)
    return grad_x, grad_w


def launching_on(device: torch.device):
    """Where Triton launches: on ``torch.cuda.current_device()``, which
    need not be the tensors' (a ``cuda:1`` model without ``set_device``);
    this makes it ``device`` for the block (nothing off CUDA)."""
    if device.type == 'cuda':
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def _save_addend(ctx, addend: Optional[torch.Tensor]) -> None:
    """Keep what the addend's gradient needs: its shape and dtype."""
    ctx.addend = None if addend is None else (addend.shape, addend.dtype)


def _addend_grad(ctx, grad_out: torch.Tensor) -> Optional[torch.Tensor]:
    """The gradient of the addend (the fifth input): the output gradient
    summed over the axes it broadcasts over; None without one, or where
    it is not asked for."""
    if ctx.addend is None or not ctx.needs_input_grad[4]:
        return None
    shape, dtype = ctx.addend
    return grad_out.sum_to_size(shape).to(dtype)


def _save_inputs(ctx, inputs, output):
    x, weight, grid, kernel_size, addend = inputs
    ctx.save_for_backward(x, weight, grid)
    ctx.kernel_size = kernel_size
    _save_addend(ctx, addend)


def _conv_backward(ctx, grad_out):
    x, weight, grid = ctx.saved_tensors
    with launching_on(x.device):
        grad_x, grad_w = _gradients(x, weight, grid, grad_out, ctx.kernel_size,
                                    ctx.needs_input_grad[:2])
    return grad_x, grad_w, None, None, _addend_grad(ctx, grad_out)


def _no_second_derivative(ctx, grad):
    raise RuntimeError("the 'triton' path's gradient of the block weights is "
                       'not differentiable (a second derivative through it); '
                       "use path='fft' or 'direct' for that")


# One autograd route, for eager calls and graphs alike (a kernel that fails
# in a backward is taken over by first_use's guard).
triton_sat_conv.register_autograd(_conv_backward, setup_context=_save_inputs)
triton_sat_conv_weight_grad.register_autograd(
    _no_second_derivative, setup_context=lambda ctx, inputs, output: None)


def grid_depthwise_conv_triton(
        x: torch.Tensor,
        weight: torch.Tensor,
        grid: torch.Tensor,
        kernel_size: int,
        addend: Optional[torch.Tensor] = None,
        out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depthwise "same" conv of a block-constant kernel (Triton), with the
    addition of a constant term fused into its last step.

    Args:
        x (Tensor): Input (B, C, H, W) on a CUDA device (or the CPU under
            ``TRITON_INTERPRET=1``), of any strides (a channel slice is
            read in place); float16, bfloat16 or float32 (float64 is
            computed in float32, with a warning).
        weight (Tensor): Block weights (C, k', k').
        grid (Tensor): int64 cell widths (k', ), summing to ``kernel_size``.
        kernel_size (int): K.
        addend (Tensor, optional): Added to every output of the batch
            before its one rounding to the output's dtype: (C, H, W) or
            anything that broadcasts to it ((C, 1, 1): a bias).
        out (Tensor, optional): (B, C, H, W) of any strides (a channel
            slice of a larger map) to write the result into, where no
            gradient is asked for.

    Returns:
        Tensor: (B, C, H, W), dtype of ``x`` (or ``out``), accumulated in
        float32.
    """
    _require(x.device)
    grid = grid.to(x.device)
    if is_compiling():
        # In a graph: the custom op and its registered autograd (inductor
        # launches the kernels, on the inputs' device, and writes a result
        # into ``out`` as it sees fit).
        result = triton_sat_conv(x, weight, grid, kernel_size, addend)
        return result if out is None else out.copy_(result)
    if x.dtype == torch.float64:
        warnings.warn(
            "path='triton' computes float64 inputs in float32 (error about "
            "1e-7 of the largest output); path='fft' or 'direct' keep "
            'float64')
    if out is not None:
        if torch.is_grad_enabled() and any(
                t is not None and t.requires_grad
                for t in (x, weight, addend)):
            raise RuntimeError(
                "path='triton' writes into out= only where no gradient is "
                'asked for (under torch.no_grad(), or of tensors that do '
                'not require one)')
        with launching_on(x.device):
            return _forward(x, weight, grid, kernel_size, addend, out)
    with launching_on(x.device):
        return triton_sat_conv(x, weight, grid, kernel_size, addend)


def _require(device: torch.device) -> None:
    why = triton_env.unavailable_on(device.type)
    if why is not None:
        raise RuntimeError(f"{why[1]}; choose path='sat', 'fft' or 'direct'")
