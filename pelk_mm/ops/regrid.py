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
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .grid import expand_by_grid, grid_tensor, sharing_grid

if TYPE_CHECKING:
    from .peripheral_conv import PeripheralConv2d

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


def regrid_state_dict(state_dict: dict,
                      convs: Dict[str, 'PeripheralConv2d'],
                      pos_embed_key: str,
                      mode: Optional[str],
                      name: str = 'the checkpoint') -> Optional[str]:
    """Re-grid, in place, the entries of a group of peripheral convs that
    share one positional embedding (a PeLK stage) to the convs' kernels.

    The stored kernel size is told by the stored positional embedding
    (C, K1, K1), and each conv's stored grid by its number of cells (the
    conv's own centre size preferred where sizes are ambiguous). Entries
    already on the convs' grids are left alone.

    Args:
        state_dict (dict): The entries, re-gridded in place.
        convs (dict[str, PeripheralConv2d]): The target convs by the key
            prefix of their entries (``'stages.0.blocks.0.mixer.large.'``).
        pos_embed_key (str): Key of the shared embedding (it tells the
            stored kernel size, and is resized with the weights).
        mode (str, optional): ``'pad'``, ``'interpolate'``, or None to
            refuse re-gridding with an error.
        name (str): What the entries belong to, for messages.

    Returns:
        str | None: What was re-gridded, for the caller to log; None when
        nothing needed it.

    Raises:
        ValueError: If the entries are on other grids and ``mode`` is None,
            or they cannot be re-gridded (no embedding that tells their
            kernel size).
    """
    if not convs:
        return None
    if mode is not None and mode not in RESIZE_MODES:
        raise ValueError(
            f'mode must be one of {RESIZE_MODES} or None, got {mode!r}')
    first_prefix, first = next(iter(convs.items()))
    kernel_size = first.kernel_size
    stored = state_dict.get(pos_embed_key)
    if stored is None:
        weight = state_dict.get(first_prefix + 'weight')
        if weight is not None and weight.shape[-1] != len(first.grid):
            cells = len(first.grid)
            raise ValueError(
                f'{name}: the checkpoint holds {weight.shape[-1]}x'
                f'{weight.shape[-1]} peripheral weights, this model '
                f'{cells}x{cells} (kernel {kernel_size}), and it has no '
                f'positional embedding that tells its kernel size (trained '
                f'with pos_embed=False, or deployed); build the backbone '
                f'with the kernel_sizes it was trained with')
        return None
    old_size = stored.shape[-1]
    old_grids = {}  # conv prefix -> the grid its stored weights are on
    for conv_prefix, conv in convs.items():
        weight = state_dict.get(conv_prefix + 'weight')
        if weight is not None:
            # The conv's own centre first: a checkpoint on this very grid is
            # then recognised even where sizes are ambiguous.
            center_size = infer_center_size(
                old_size,
                weight.shape[-1],
                conv.base,
                prefer=(conv.center_size, 5, 7))
            old_grids[conv_prefix] = sharing_grid(old_size, center_size,
                                                  conv.base)
    if old_size == kernel_size and all(
            old_grids.get(conv_prefix, conv.grid) == conv.grid
            for conv_prefix, conv in convs.items()):
        return None
    if mode is None:
        raise ValueError(
            f'{name}: the checkpoint was trained with {old_size}x{old_size} '
            f'kernels on other sharing grids than this model\'s '
            f'{kernel_size}x{kernel_size} ones; set kernel_resize=\'pad\' or '
            f'\'interpolate\' in the backbone to re-grid them, or use the '
            f'kernel_sizes and center_size of the checkpoint')
    state_dict[pos_embed_key] = resize_pos_embed(stored, kernel_size, mode)
    for conv_prefix, grid in old_grids.items():
        key = conv_prefix + 'weight'
        state_dict[key] = regrid_weight(state_dict[key], grid,
                                        convs[conv_prefix].grid, mode)
    return (f'{name}: re-gridded the peripheral kernels and the positional '
            f'embedding of the checkpoint from {old_size}x{old_size} (grid '
            f'{next(iter(old_grids.values()), None)}) to {kernel_size}x'
            f'{kernel_size} (grid {first.grid}) (kernel_resize={mode!r})')
