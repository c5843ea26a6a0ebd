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

``path`` is ``'auto'`` or one of the implementations of
:mod:`pelk_mm.ops.paths` (``direct``, ``fft``, ``box_sums``, ``sat``,
``triton``): what each supports and costs, and how ``auto`` chooses.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from . import paths
from .torch_features import is_compiling

POS_BORDERS = ('valid', 'padded')


def depthwise_conv(x: torch.Tensor,
                   kernel: torch.Tensor,
                   path: str = 'auto',
                   addend: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depthwise "same" conv of a dense kernel (C, K, K) through the path
    named (or chosen) by ``path``, plus ``addend`` (broadcast to
    (C, H, W))."""
    return paths.run(path, x, kernel, None, kernel.shape[-1], addend=addend)


def grid_depthwise_conv(x: torch.Tensor,
                        weight: torch.Tensor,
                        grid: torch.Tensor,
                        path: str = 'auto',
                        kernel_size: Optional[int] = None,
                        addend: Optional[torch.Tensor] = None,
                        out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depthwise "same" conv of a kernel given by block weights on a grid.

    Args:
        x (Tensor): Input (B, C, H, W).
        weight (Tensor): Block weights (C, k', k').
        grid (Tensor): int64 cell widths (k',), summing to K.
        path (str): ``'auto'`` or a name of :mod:`pelk_mm.ops.paths`.
        kernel_size (int, optional): K, if known (see
            :func:`~pelk_mm.ops.grid.expand_by_grid`). Defaults to the sum
            of ``grid``.
        addend (Tensor, optional): Added to the output, broadcast to
            (C, H, W) (positional term, bias); ``'triton'`` adds it in its
            kernel. Defaults to None.
        out (Tensor, optional): Where to write the output, (B, C, H, W) of
            any strides (e.g. a channel slice of a larger map).
            Defaults to None (a new tensor).

    Returns:
        Tensor: (B, C, H, W) (``out`` where given).
    """
    if kernel_size is None:
        kernel_size = int(grid.sum())
    return paths.run(
        path, x, weight, grid, kernel_size, addend=addend, out=out)


def _window_bounds(length: int, size: int, device) -> tuple:
    """Kernel rows [lo, hi) that overlap the image, for every output row."""
    pad = size // 2
    pos = torch.arange(length, device=device)
    lo = (pad - pos).clamp(min=0)
    hi = (length + pad - pos).clamp(max=size)
    return lo, hi


def positional_table(pos_kernel: torch.Tensor,
                     border: str = 'valid') -> torch.Tensor:
    """What the positional term of any map size is read from: the
    summed-area table of ``W * h`` (C, K + 1, K + 1) for ``'valid'``, its
    sum (C, 1, 1) for ``'padded'``. A deployed conv keeps it, so that a
    traced graph reads it instead of summing the kernel on every call."""
    if border == 'padded':
        return pos_kernel.sum(dim=(-2, -1), keepdim=True)
    if border != 'valid':
        raise ValueError(f'pos_border must be one of {POS_BORDERS}, '
                         f'got {border!r}')
    return F.pad(pos_kernel.cumsum(-2).cumsum(-1), (1, 0, 1, 0))


def positional_term_from_table(table: torch.Tensor,
                               height: int,
                               width: int,
                               border: str = 'valid') -> torch.Tensor:
    """:func:`positional_term` from its :func:`positional_table`."""
    if border == 'padded':
        return table
    # conv(1_image, W * h): each output pixel sums the rectangle of kernel
    # taps that fall inside the image, four reads of the table.
    size = table.shape[-1] - 1
    row_lo, row_hi = _window_bounds(height, size, table.device)
    col_lo, col_hi = _window_bounds(width, size, table.device)
    rows = table.index_select(-2, row_hi) - table.index_select(-2, row_lo)
    return rows.index_select(-1, col_hi) - rows.index_select(-1, col_lo)


def _image_taps(length: int, size: int, device,
                dtype: torch.dtype) -> torch.Tensor:
    """(length, size): 1 where kernel tap ``i`` of output position ``p``
    lands in the image (``i`` in the :func:`_window_bounds` of ``p``),
    else 0."""
    lo, hi = _window_bounds(length, size, device)
    taps = torch.arange(size, device=device)
    return ((taps >= lo[:, None]) & (taps < hi[:, None])).to(dtype)


def positional_term(pos_kernel: torch.Tensor,
                    height: int,
                    width: int,
                    border: str = 'valid') -> torch.Tensor:
    """The positional-embedding term of Eq. 3 for an ``H x W`` map.

    For ``'valid'``, ``conv(1_image, W * h)`` as two products with the
    0/1 matrices of the taps that land in the image, ``A_H (W * h)
    A_W^T``: each output sums its in-image taps directly (no differences of
    cumulative sums), and the backward is two more products (the gradient
    of gathers from a summed-area table would be an index_add, which
    inductor's CPU code generation of torch 2.12 writes out of bounds when
    the gradient arrives channels-last). A deployed conv, which has no
    backward, reads the term from its :func:`positional_table` instead.

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
    size = pos_kernel.shape[-1]
    dtype = torch.promote_types(pos_kernel.dtype, torch.float32)
    # Sums of up to K^2 products: float32 or better, also under autocast.
    with torch.autocast(pos_kernel.device.type, enabled=False):
        rows = _image_taps(height, size, pos_kernel.device, dtype)
        cols = _image_taps(width, size, pos_kernel.device, dtype)
        return rows @ pos_kernel.to(dtype) @ cols.T


def check_arguments(x: torch.Tensor,
                    kernel: torch.Tensor,
                    pos_kernel: Optional[torch.Tensor] = None,
                    bias: Optional[torch.Tensor] = None,
                    grid: Optional[torch.Tensor] = None,
                    kernel_size: Optional[int] = None) -> None:
    """Refuse arguments of :func:`peripheral_conv2d` that the paths would
    read differently (each path its own way): shapes only, and the grid's
    sum where it is on the CPU outside a graph (no device sync).

    Raises:
        ValueError: Naming the argument, its shape and the one expected.
    """
    if x.dim() != 4 or kernel.dim() != 3 or kernel.shape[0] != x.shape[1] \
            or kernel.shape[-1] != kernel.shape[-2]:
        raise ValueError(
            f'peripheral_conv2d takes x (B, C, H, W) and kernel (C, K, K) '
            f'(or block weights (C, k, k) with grid); got x '
            f'{tuple(x.shape)}, kernel {tuple(kernel.shape)}')
    if grid is None:
        size = kernel.shape[-1]
        if size % 2 == 0:
            raise ValueError(
                f'kernel {tuple(kernel.shape)}: a "same" conv needs an odd '
                f'kernel size, got {size}')
    else:
        if grid.dim() != 1 or grid.numel() != kernel.shape[-1]:
            raise ValueError(
                f'grid {tuple(grid.shape)}: one width per cell of the block '
                f'weights {tuple(kernel.shape)}')
        if grid.device.type == 'cpu' and not is_compiling():
            total = int(grid.sum())
            if kernel_size is not None and total != kernel_size:
                raise ValueError(
                    f'grid {grid.tolist()} sums to {total}, not kernel_size '
                    f'{kernel_size}')
            kernel_size = total
        size = kernel_size
        if size is not None and size % 2 == 0:
            raise ValueError(
                f'grid {grid.tolist()}: a "same" conv needs an odd kernel '
                f'size, got {size}')
    channels = x.shape[1]
    if pos_kernel is not None and size is not None and tuple(
            pos_kernel.shape) != (channels, size, size):
        raise ValueError(
            f'pos_kernel {tuple(pos_kernel.shape)}: expected ({channels}, '
            f'{size}, {size}), the kernel\'s')
    if bias is not None and tuple(bias.shape) != (channels, ):
        raise ValueError(f'bias {tuple(bias.shape)}: expected ({channels}, )')


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
        path (str): ``'auto'`` or a name of :mod:`pelk_mm.ops.paths` (the
            summed-area ones with ``grid`` only).
        grid (Tensor, optional): int64 cell widths (k',) of the sharing
            grid when ``kernel`` holds block weights.
        kernel_size (int, optional): K, with ``grid``, if known.

    Returns:
        Tensor: Output of shape (B, C, H, W).
    """
    check_arguments(x, kernel, pos_kernel, bias, grid, kernel_size)
    return peripheral_conv2d_unchecked(x, kernel, pos_kernel, pos_border, bias,
                                       path, grid, kernel_size)


def peripheral_conv2d_unchecked(
        x: torch.Tensor,
        kernel: torch.Tensor,
        pos_kernel: Optional[torch.Tensor] = None,
        pos_border: str = 'valid',
        bias: Optional[torch.Tensor] = None,
        path: str = 'auto',
        grid: Optional[torch.Tensor] = None,
        kernel_size: Optional[int] = None) -> torch.Tensor:
    """:func:`peripheral_conv2d` without :func:`check_arguments`: for
    :class:`~pelk_mm.ops.PeripheralConv2d`, which checks its arguments once,
    when it is built, and its input's shape per call (so no forward sums the
    grid again)."""
    # The positional term and the bias, added to the conv in one step
    # (fused into the kernels of the paths that can).
    addend = None
    if pos_kernel is not None:
        addend = positional_term(pos_kernel, x.shape[-2], x.shape[-1],
                                 pos_border)
    if bias is not None:
        bias = bias.view(-1, 1, 1)
        addend = bias if addend is None else addend + bias
    if grid is None:
        return depthwise_conv(x, kernel, path, addend)
    return grid_depthwise_conv(x, kernel, grid, path, kernel_size, addend)


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
