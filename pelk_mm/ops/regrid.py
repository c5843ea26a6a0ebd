"""Moving peripheral kernels between kernel sizes (e.g. 51 -> 101).

A checkpoint trained with one kernel size K1 holds k1'xk1' block weights on
the grid of K1 and a (C, K1, K1) positional embedding. To load it into a
model with kernel K2, the weights are taken back to the dense KxK kernel they
stand for, resized to K2xK2, and projected onto the K2 grid by averaging each
grid block (the least-squares projection onto kernels that are constant on
the blocks). Two ways to resize, both centre-aligned:

* ``'pad'`` (default): keep every tap where it was; zeros beyond the old
  extent when growing, the centre crop when shrinking. Growing keeps the sum
  of the kernel (its response to a flat input) exactly, and the dense centre
  of the new grid holds the old kernel's values.
* ``'interpolate'``: stretch the kernel over the new extent (bilinear, corners
  aligned), scaled by (K1/K2)^2 so that its sum stays about the same; as
  position embeddings are resized for a new input size.

The positional embedding h is resized the same way, without the scaling: it
is added to the input at each tap (Eq. 3), so zeros are neutral.
"""
from typing import List, Sequence

import torch
import torch.nn.functional as F

from .grid import expand_by_grid, grid_tensor, sharing_grid

RESIZE_MODES = ('pad', 'interpolate')


def infer_center_size(kernel_size: int,
                      num_cells: int,
                      base: int = 2,
                      prefer: Sequence[int] = (5, 7)) -> int:
    """The dense-centre size whose grid for ``kernel_size`` has ``num_cells``.

    Small kernels can have several (9 with a 3x3 or a 5x5 centre: 7 cells
    each); then the first of ``prefer`` that fits is taken.

    Raises:
        ValueError: If no centre size fits, or several do and none is
            preferred.
    """
    fits = [
        c for c in range(1, kernel_size + 1, 2)
        if len(sharing_grid(kernel_size, c, base)) == num_cells
    ]
    if not fits:
        raise ValueError(
            f'no sharing grid of a {kernel_size}x{kernel_size} kernel (base '
            f'{base}) has {num_cells} cells: the block weights do not belong '
            f'to a kernel of that size')
    for center_size in prefer:
        if center_size in fits:
            return center_size
    if len(fits) > 1:
        raise ValueError(
            f'{num_cells} cells fit a {kernel_size}x{kernel_size} kernel with '
            f'centre sizes {fits}; cannot tell which grid the weights are on')
    return fits[0]


def resize_dense(kernel: torch.Tensor,
                 size: int,
                 mode: str = 'pad',
                 scale: bool = True) -> torch.Tensor:
    """Resize the last two (square, odd) dims of a dense kernel to ``size``.

    Args:
        kernel (Tensor): Shape (..., K1, K1).
        size (int): K2, odd.
        mode (str): ``'pad'`` or ``'interpolate'`` (see the module doc).
        scale (bool): With ``'interpolate'``, multiply by (K1/K2)^2.

    Returns:
        Tensor: Shape (..., K2, K2).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f'mode must be one of {RESIZE_MODES}, got {mode!r}')
    old = kernel.shape[-1]
    if old == size:
        return kernel
    if mode == 'pad':
        margin = (size - old) // 2  # negative: crop
        return F.pad(kernel, [margin] * 4)
    lead = kernel.shape[:-2]
    flat = kernel.reshape(1, -1, old, old).float()
    resized = F.interpolate(
        flat, size=(size, size), mode='bilinear', align_corners=True)
    if scale:
        resized = resized * (old / size)**2
    return resized.reshape(*lead, size, size).to(kernel.dtype)


def block_mean(dense: torch.Tensor, grid: List[int]) -> torch.Tensor:
    """Average a dense (..., K, K) kernel over each block of ``grid``.

    Returns:
        Tensor: The k'xk' block weights, shape (..., k', k').
    """
    widths = grid_tensor(grid, dense.device)
    cell_of_tap = torch.repeat_interleave(
        torch.arange(len(grid), device=dense.device), widths)
    # pool[a, p] = 1 / width(a) where tap p lies in cell a.
    pool = F.one_hot(cell_of_tap, len(grid)).t().to(dense.dtype)
    pool = pool / widths.to(dense.dtype)[:, None]
    return pool @ dense @ pool.t()


def regrid_weight(weight: torch.Tensor,
                  grid_from: List[int],
                  grid_to: List[int],
                  mode: str = 'pad') -> torch.Tensor:
    """Block weights on ``grid_from`` -> block weights on ``grid_to``.

    Args:
        weight (Tensor): Shape (..., k1', k1'), k1' = len(grid_from).
        grid_from (list[int]): The grid the weights were trained on.
        grid_to (list[int]): The target grid.
        mode (str): ``'pad'`` or ``'interpolate'``.

    Returns:
        Tensor: Shape (..., k2', k2').
    """
    if list(grid_from) == list(grid_to):
        return weight
    dense = expand_by_grid(weight, grid_tensor(grid_from, weight.device))
    dense = resize_dense(dense, sum(grid_to), mode)
    return block_mean(dense, grid_to)


def resize_pos_embed(pos_embed: torch.Tensor,
                     size: int,
                     mode: str = 'pad') -> torch.Tensor:
    """Resize a (C, K1, K1) positional embedding to (C, K2, K2)."""
    return resize_dense(pos_embed, size, mode, scale=False)
