"""The sharing grid of peripheral convolution (PeLK, Eq. 2).

A KxK peripheral kernel is generated from a k'xk' parameter kernel: cell ``a``
of the grid covers ``grid[a]`` consecutive kernel rows (and, by symmetry,
columns). The grid is symmetric about the centre: ``center_size`` cells of
width 1 form the dense centre, then the cells grow geometrically (``base``,
``base**2``, ...) towards the periphery, and the outermost cell is truncated so
that the widths add up to exactly ``kernel_size``.

Where the remainder left for the outermost cell is small (e.g. 69 with a 7x7
centre leaves 1 after 1+1+1+2+4+8+16), the rule is applied literally: the
outermost cell is 1 wide rather than being merged into its neighbour. A
remainder of 0 (e.g. 67 with a 7x7 centre) adds no cell.
"""
from typing import List, Optional

import torch


def sharing_grid(kernel_size: int,
                 center_size: int = 5,
                 base: int = 2) -> List[int]:
    """Return the full sharing grid of a peripheral kernel.

    Args:
        kernel_size (int): Side K of the dense kernel; odd, >= ``center_size``.
        center_size (int): Side of the dense (unshared) centre; odd, >= 1.
            Defaults to 5 (the paper's default; its 101 variant uses 7).
        base (int): Growth factor m of the cell widths; >= 2. Defaults to 2.

    Returns:
        list[int]: The k' cell widths, symmetric, summing to ``kernel_size``.
        For example ``sharing_grid(31) == [7, 4, 2, 1, 1, 1, 1, 1, 2, 4, 7]``.

    Raises:
        ValueError: If an argument breaks one of the constraints above.
    """
    for name, value in (('kernel_size', kernel_size),
                        ('center_size', center_size), ('base', base)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f'{name} must be an int, got {value!r}')
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f'kernel_size must be a positive odd number so that the kernel '
            f'has a centre, got {kernel_size}; use {kernel_size + 1} or '
            f'{max(kernel_size - 1, 1)}')
    if center_size < 1 or center_size % 2 == 0:
        raise ValueError(
            f'center_size must be a positive odd number, got {center_size}')
    if center_size > kernel_size:
        raise ValueError(
            f'center_size ({center_size}) must not exceed kernel_size '
            f'({kernel_size})')
    if base < 2:
        raise ValueError(f'base must be >= 2 so that cells grow towards the '
                         f'periphery, got {base}')

    center_radius = center_size // 2
    remaining = kernel_size // 2 - center_radius
    outer = []  # cell widths from the centre outwards, centre excluded
    width = base
    while remaining > 0:
        outer.append(min(width, remaining))
        remaining -= outer[-1]
        width *= base
    half = [1] * center_radius + outer  # inside out, without the centre
    return half[::-1] + [1] + half


def grid_tensor(grid: List[int], device=None) -> torch.Tensor:
    """The grid as an int64 tensor, ready for ``repeat_interleave``."""
    return torch.as_tensor(grid, dtype=torch.long, device=device)


def expand_by_grid(weight: torch.Tensor,
                   grid: torch.Tensor,
                   size: Optional[int] = None) -> torch.Tensor:
    """Expand ``(..., k', k')`` block weights to a dense ``(..., K, K)``
    kernel.

    Every position of block ``(a, b)`` takes ``weight[..., a, b]`` (Eq. 1).

    Args:
        weight (Tensor): Block weights of shape ``(..., k', k')``.
        grid (Tensor): int64 cell widths of length k', summing to K.
        size (int, optional): K, if the caller knows it (modules do, from
            their construction): then nothing is read back from ``grid``,
            which keeps the expansion free of a device sync and traceable
            with static shapes. Defaults to ``int(grid.sum())``.

    Returns:
        Tensor: The dense kernel, shape ``(..., K, K)``.
    """
    if size is None:
        size = int(grid.sum())
    # The cell of each tap, by comparing the taps with the cells' right
    # edges: static-shape ops only (arange of a Python int, cumsum, a
    # comparison), so exporters see a (K, ) index, unlike repeat_interleave
    # with tensor repeats.
    edges = grid.cumsum(0)
    taps = torch.arange(size, device=grid.device)
    cells = (taps[:, None] >= edges).sum(1)
    return weight.index_select(-1, cells).index_select(-2, cells)
