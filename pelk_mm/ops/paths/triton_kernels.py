"""The kernels of the ``'triton'`` path (:mod:`.triton_sat`): the same
algorithm as the fused CPU extension (``'sat'``) and its standard-op form
(``'box_sums'``): about k'^2 + 4k' operations per pixel, however large K
is. Four kernels per call, each over planes (one batch item, one channel)
and column blocks, with float32 accumulation for every input dtype:

1. ``_row_prefix``: exclusive prefix sums along each row;
2. ``_mix``: ``Z_a = sum_j mix[a, j] * pre[x + e_j]`` (the column boxes of
   the cells, mixed by the block-weight differences);
3. ``_column_prefix``: exclusive prefix sums of each ``Z_a`` down the
   columns;
4. ``_row_boxes``: ``Y = sum_a rows_a[y + e_(a+1)] - rows_a[y + e_a]``.

Reads outside the map are clamped onto the prefix sums' ends, which is the
zero padding. The input gradient is the same operation on the output
gradient with the kernel flipped; the block-weight gradient contracts the
column boxes of the input with the row boxes of the output gradient.

Triton compiles the kernels at run time for the GPU (no nvcc at install).
Under ``TRITON_INTERPRET=1`` (set before triton is imported) they run on
CPU tensors through Triton's interpreter, which is how the tests check them
where no GPU is.
"""
import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .triton_sat import TRITON_DEVICES, available_on

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - torch ships triton on Linux
    triton = None

BLOCK_X = 32
# The longest stretch the prefix-sum kernels hold at once: rows are summed
# ROW_BLOCK columns at a time, columns COLUMN_BLOCK rows at a time, each
# block carrying the sum of those before (bounded resources at any size).
ROW_BLOCK = 256
COLUMN_BLOCK = 32

if triton is not None:

    @triton.jit
    def _row_prefix(x_ptr, pre_ptr, width, BLOCK_W: tl.constexpr):
        """pre[row, 0] = 0, pre[row, 1 + i] = sum(x[row, :i + 1]), a block
        of ``BLOCK_W`` columns at a time with the sum carried over."""
        row = tl.program_id(0).to(tl.int64)
        out = pre_ptr + row * (width + 1)
        tl.store(out, 0.)
        carry = tl.zeros((BLOCK_W, ), dtype=tl.float32)
        for start in range(0, width, BLOCK_W):
            cols = start + tl.arange(0, BLOCK_W)
            values = tl.load(
                x_ptr + row * width + cols, mask=cols < width,
                other=0.).to(tl.float32)
            tl.store(
                out + 1 + cols,
                tl.cumsum(values, axis=0) + carry,
                mask=cols < width)
            carry += tl.sum(values, axis=0)

    @triton.jit
    def _mix(pre_ptr, mix_ptr, edges_ptr, z_ptr, channels, height, width,
             num_cells, BLOCK_A: tl.constexpr, BLOCK_X: tl.constexpr):
        """z[p, a, y, x] = sum_j mix[c, a, j] pre[p, y, clamp(x + e_j)]."""
        row = tl.program_id(0).to(tl.int64)  # p * H + y
        plane = row // height
        y = row % height
        channel = plane % channels
        xs = tl.program_id(1) * BLOCK_X + tl.arange(0, BLOCK_X)
        cells = tl.arange(0, BLOCK_A)
        acc = tl.zeros((BLOCK_A, BLOCK_X), dtype=tl.float32)
        pre_row = pre_ptr + row * (width + 1)
        mix_c = mix_ptr + channel * num_cells * (num_cells + 1)
        for j in range(0, num_cells + 1):
            edge = tl.load(edges_ptr + j)
            cols = tl.minimum(tl.maximum(xs + edge, 0), width)
            reads = tl.load(pre_row + cols, mask=xs < width, other=0.)
            weights = tl.load(
                mix_c + cells * (num_cells + 1) + j,
                mask=cells < num_cells,
                other=0.)
            acc += weights[:, None] * reads[None, :]
        out = z_ptr + ((plane * num_cells + cells[:, None]) * height +
                       y) * width + xs[None, :]
        tl.store(
            out,
            acc,
            mask=(cells[:, None] < num_cells) & (xs[None, :] < width))

    @triton.jit
    def _column_prefix(z_ptr, rows_ptr, height, width, BLOCK_R: tl.constexpr,
                       BLOCK_X: tl.constexpr):
        """rows[q, 0, x] = 0, rows[q, 1 + i, x] = sum(z[q, :i + 1, x]), a
        block of ``BLOCK_R`` rows at a time with the sums carried over (so
        that its registers and shared memory do not grow with H)."""
        q = tl.program_id(0).to(tl.int64)  # p * k' + a
        xs = tl.program_id(1) * BLOCK_X + tl.arange(0, BLOCK_X)
        out = rows_ptr + q * (height + 1) * width
        tl.store(out + xs, tl.zeros((BLOCK_X, ), tl.float32), xs < width)
        carry = tl.zeros((BLOCK_X, ), dtype=tl.float32)
        for start in range(0, height, BLOCK_R):
            ys = start + tl.arange(0, BLOCK_R)
            mask = (ys[:, None] < height) & (xs[None, :] < width)
            values = tl.load(
                z_ptr + (q * height + ys[:, None]) * width + xs[None, :],
                mask=mask,
                other=0.)
            sums = tl.cumsum(values, axis=0) + carry[None, :]
            tl.store(out + (1 + ys[:, None]) * width + xs[None, :], sums, mask)
            carry += tl.sum(values, axis=0)

    @triton.jit
    def _row_boxes(rows_ptr, edges_ptr, out_ptr, height, width, num_cells,
                   sign, shift, SUM: tl.constexpr, BLOCK_X: tl.constexpr):
        """Row boxes of column prefix sums ``rows`` (P, k' or 1, H + 1, W).

        ``sign`` 1 (the forward, SUM): ``out[p, y] = sum_a rows[p, a,
        clamp(y + e_(a+1))] - rows[p, a, clamp(y + e_a)]``. ``sign`` -1
        (the output gradient's boxes over mirrored rows, one per cell):
        ``out[p, a, y] = rows[p, 0, clamp(y - e_a + shift)] - rows[p, 0,
        clamp(y - e_(a+1) + shift)]``. Clamps are to [0, H].
        """
        row = tl.program_id(0).to(tl.int64)  # p * H + y
        plane = row // height
        y = row % height
        xs = tl.program_id(1) * BLOCK_X + tl.arange(0, BLOCK_X)
        mask = xs < width
        acc = tl.zeros((BLOCK_X, ), dtype=tl.float32)
        for a in range(0, num_cells):
            lo_edge = tl.load(edges_ptr + a)
            hi_edge = tl.load(edges_ptr + a + 1)
            if sign > 0:
                hi = tl.minimum(tl.maximum(y + hi_edge, 0), height)
                lo = tl.minimum(tl.maximum(y + lo_edge, 0), height)
            else:
                hi = tl.minimum(tl.maximum(y - lo_edge + shift, 0), height)
                lo = tl.minimum(tl.maximum(y - hi_edge + shift, 0), height)
            if SUM:
                source = rows_ptr + (plane * num_cells + a) * (height +
                                                               1) * width
            else:
                source = rows_ptr + plane * (height + 1) * width
            box = tl.load(source + hi * width + xs, mask=mask, other=0.) - \
                tl.load(source + lo * width + xs, mask=mask, other=0.)
            if SUM:
                acc += box
            else:
                tl.store(
                    out_ptr + ((plane * num_cells + a) * height + y) * width +
                    xs, box, mask)
        if SUM:
            tl.store(out_ptr + row * width + xs, acc, mask)


def _next_power_of_2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def _row_block(width: int) -> int:
    return min(_next_power_of_2(width), ROW_BLOCK)


def _column_block(height: int) -> int:
    return min(_next_power_of_2(height), COLUMN_BLOCK)


def block_sizes(height: int, width: int, num_cells: int) -> tuple:
    """The compile-time block sizes of a call on (H, W) maps with k' cells:
    with the dtype and the device, what selects a compiled kernel (Triton
    also specializes integer arguments that are 1 or multiples of 16)."""
    return (_row_block(width), _column_block(height),
            _next_power_of_2(num_cells))


def _edges(grid: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Cell a covers input offsets [e_a, e_(a+1)) from the output pixel."""
    return (F.pad(grid.cumsum(0), (1, 0)) - kernel_size // 2).to(torch.int32)


def _row_prefix_sums(x: torch.Tensor) -> torch.Tensor:
    planes, height, width = x.shape
    pre = torch.empty(planes, height, width + 1, device=x.device)
    _row_prefix[(planes * height, )](x, pre, width, BLOCK_W=_row_block(width))
    return pre


def _mixed(pre: torch.Tensor, mix: torch.Tensor, edges: torch.Tensor,
           channels: int) -> torch.Tensor:
    planes, height, width = pre.shape[0], pre.shape[1], pre.shape[2] - 1
    num_cells = mix.shape[1]
    z = torch.empty(planes, num_cells, height, width, device=pre.device)
    _mix[(planes * height, triton.cdiv(width, BLOCK_X))](
        pre,
        mix,
        edges,
        z,
        channels,
        height,
        width,
        num_cells,
        BLOCK_A=_next_power_of_2(num_cells),
        BLOCK_X=BLOCK_X)
    return z


def _column_prefix_sums(z: torch.Tensor) -> torch.Tensor:
    planes, num_cells, height, width = z.shape
    rows = torch.empty(planes, num_cells, height + 1, width, device=z.device)
    _column_prefix[(planes * num_cells, triton.cdiv(width, BLOCK_X))](
        z, rows, height, width, BLOCK_R=_column_block(height), BLOCK_X=BLOCK_X)
    return rows


def _forward(x: torch.Tensor, weight: torch.Tensor, grid: torch.Tensor,
             kernel_size: int) -> torch.Tensor:
    """The conv of (B, C, H, W) ``x`` in float32, (B, C, H, W)."""
    batch, channels, height, width = x.shape
    num_cells = weight.shape[-1]
    edges = _edges(grid, kernel_size)
    weight = weight.float()
    mix = (F.pad(weight, (1, 0)) - F.pad(weight, (0, 1))).contiguous()
    pre = _row_prefix_sums(x.reshape(-1, height, width).contiguous())
    rows = _column_prefix_sums(_mixed(pre, mix, edges, channels))
    out = torch.empty(batch, channels, height, width, device=x.device)
    _row_boxes[(batch * channels * height, triton.cdiv(width, BLOCK_X))](
        rows,
        edges,
        out,
        height,
        width,
        num_cells,
        1,
        0,
        SUM=True,
        BLOCK_X=BLOCK_X)
    return out


def _weight_grad(x: torch.Tensor, grad_out: torch.Tensor, grid: torch.Tensor,
                 kernel_size: int) -> torch.Tensor:
    """dL/dw[c, a, b] = sum over batch and pixels of the input's column
    boxes of cell b times the output gradient's row boxes of cell a."""
    batch, channels, height, width = x.shape
    num_cells = grid.numel()
    edges = _edges(grid, kernel_size)
    # The column boxes: _mix with mix[b, j] = [j = b + 1] - [j = b].
    eye = torch.eye(num_cells, device=x.device)
    boxes_mix = (F.pad(eye, (1, 0)) - F.pad(eye,
                                            (0, 1))).expand(channels, -1,
                                                            -1).contiguous()
    pre = _row_prefix_sums(x.reshape(-1, height, width).contiguous())
    columns = _mixed(pre, boxes_mix, edges, channels)
    grad_rows = _column_prefix_sums(
        grad_out.reshape(-1, 1, height, width).float().contiguous())
    row_boxes = torch.empty_like(columns)
    _row_boxes[(batch * channels * height, triton.cdiv(width, BLOCK_X))](
        grad_rows,
        edges,
        row_boxes,
        height,
        width,
        num_cells,
        -1,
        1,
        SUM=False,
        BLOCK_X=BLOCK_X)
    rows = row_boxes.view(batch, channels, num_cells, height * width)
    cols = columns.view(batch, channels, num_cells, height * width)
    with ieee_float32_matmul(x.device.type):
        return torch.matmul(rows, cols.transpose(-1, -2)).sum(0)


@contextlib.contextmanager
def ieee_float32_matmul(device_type: str):
    """Float32 matmuls in full float32 for the block: the weight gradient
    sums H*W products per entry, which TF32 (``torch.backends.cuda.matmul``
    set to ``'tf32'`` by a training script) would round to 10 bits each and
    autocast (a backward run inside the autocast region) to 8 or 11."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    matmul.fp32_precision = 'ieee'
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        matmul.fp32_precision = saved


def launching_on(device: torch.device):
    """Where Triton launches: on ``torch.cuda.current_device()``, which
    need not be the tensors' (a ``cuda:1`` model without ``set_device``);
    this makes it ``device`` for the block (nothing off CUDA)."""
    if device.type == 'cuda':
        return torch.cuda.device(device)
    return contextlib.nullcontext()


class _TritonSAT(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, grid, kernel_size, guard):
        ctx.save_for_backward(x, weight, grid)
        ctx.kernel_size = kernel_size
        ctx.guard = guard
        with launching_on(x.device):
            return _forward(x, weight, grid, kernel_size).to(x.dtype)

    @staticmethod
    @once_differentiable  # the kernels build no graph of their own
    def backward(ctx, grad_out):
        x, weight, grid = ctx.saved_tensors
        needs = ctx.needs_input_grad[:2]
        try:
            grad_x, grad_w = _gradients(x, weight, grid, grad_out,
                                        ctx.kernel_size, needs)
        except Exception as error:  # a compile or launch failure
            if ctx.guard is None:
                raise
            grad_x, grad_w = ctx.guard.recover(error, 'backward', x, weight,
                                               grad_out, needs)
        return grad_x, grad_w, None, None, None


def _gradients(x, weight, grid, grad_out, kernel_size, needs):
    grad_x = grad_w = None
    with launching_on(x.device):
        if needs[0]:
            grad_x = _forward(grad_out, weight.flip(-2, -1), grid.flip(0),
                              kernel_size).to(x.dtype)
        if needs[1]:
            grad_w = _weight_grad(x, grad_out, grid,
                                  kernel_size).to(weight.dtype)
    return grad_x, grad_w


def grid_depthwise_conv_triton(x: torch.Tensor,
                               weight: torch.Tensor,
                               grid: torch.Tensor,
                               kernel_size: int,
                               guard=None) -> torch.Tensor:
    """Depthwise "same" conv of a block-constant kernel (Triton).

    Args:
        x (Tensor): Input (B, C, H, W) on a CUDA device (or the CPU under
            ``TRITON_INTERPRET=1``); float16, bfloat16 or float32 (float64
            is computed in float32, with a warning).
        weight (Tensor): Block weights (C, k', k').
        grid (Tensor): int64 cell widths (k', ), summing to ``kernel_size``.
        kernel_size (int): K.
        guard (optional): What takes over where the backward's kernels
            fail to compile or launch (``first_use.Guard``); None: the
            failure is raised.

    Returns:
        Tensor: (B, C, H, W), dtype of ``x``, accumulated in float32.
    """
    _require(x.device)
    if x.dtype == torch.float64:
        warnings.warn(
            "path='triton' computes float64 inputs in float32 (error about "
            "1e-7 of the largest output); path='fft' or 'direct' keep "
            'float64')
    return _TritonSAT.apply(x, weight, grid.to(x.device), kernel_size, guard)


def _require(device: torch.device) -> None:
    if not available_on(device):
        raise RuntimeError(f"path='triton' {TRITON_DEVICES}, this map is on "
                           f"{device.type}; choose path='sat', 'fft' or "
                           f"'direct'")
