import pytest
import torch

from pelk_mm.ops import expand_by_grid, sharing_grid
from pelk_mm.ops.grid import grid_tensor


def full(half):
    """The full grid of a half one listed outside-in, ending with the
    centre (as the paper's examples read)."""
    return half + half[::-1][1:]


@pytest.mark.parametrize('kernel_size, center_size, half', [
    (31, 5, [7, 4, 2, 1, 1, 1]),
    (51, 5, [9, 8, 4, 2, 1, 1, 1]),
    (51, 1, [11, 8, 4, 2, 1]),
    (51, 3, [10, 8, 4, 2, 1, 1]),
    (51, 7, [8, 8, 4, 2, 1, 1, 1, 1]),
    (49, 5, [8, 8, 4, 2, 1, 1, 1]),
    (47, 5, [7, 8, 4, 2, 1, 1, 1]),
    (13, 5, [2, 2, 1, 1, 1]),
    (101, 7, [17, 16, 8, 4, 2, 1, 1, 1, 1]),
])
def test_paper_grids(kernel_size, center_size, half):
    assert sharing_grid(kernel_size, center_size) == full(half)


def test_fig1b_grid_and_sizes():
    assert sharing_grid(31) == [7, 4, 2, 1, 1, 1, 1, 1, 2, 4, 7]
    assert len(sharing_grid(51)) == 13
    assert len(sharing_grid(101, 7)) == 17


def test_documented_choices_for_ambiguous_sizes():
    # 69 with a 7x7 centre leaves 1 for the outermost cell: kept, not merged.
    assert sharing_grid(69, 7) == full([1, 16, 8, 4, 2, 1, 1, 1, 1])
    # 67 fills exactly; the dense kernel (centre == kernel) is all ones.
    assert sharing_grid(67, 7) == full([16, 8, 4, 2, 1, 1, 1, 1])
    assert sharing_grid(5, 5) == [1] * 5
    assert sharing_grid(1, 1) == [1]


@pytest.mark.parametrize(
    'kernel_size, center_size',
    [(kernel_size, center_size)
     for kernel_size in (3, 7, 13, 21, 31, 47, 51, 63, 101, 151)
     for center_size in (1, 3, 5, 7) if center_size <= kernel_size])
@pytest.mark.parametrize('base', [2, 3])
def test_grid_invariants(kernel_size, center_size, base):
    grid = sharing_grid(kernel_size, center_size, base)
    assert sum(grid) == kernel_size
    assert grid == grid[::-1]
    middle = len(grid) // 2
    assert grid[middle - center_size // 2:middle + center_size // 2 + 1] == \
        [1] * center_size


@pytest.mark.parametrize('kwargs, match', [
    (dict(kernel_size=50), 'odd'),
    (dict(kernel_size=0), 'odd'),
    (dict(kernel_size=51,
          center_size=4), 'center_size must be a positive odd'),
    (dict(kernel_size=3, center_size=5), r'center_size \(5\) must not exceed'),
    (dict(kernel_size=51, base=1), 'base must be >= 2'),
    (dict(kernel_size=51.0), 'must be an int'),
])
def test_bad_grid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sharing_grid(**kwargs)


def test_expand_by_grid_is_eq1():
    grid = sharing_grid(13)  # [2, 2, 1, 1, 1, 1, 1, 2, 2]
    weight = torch.arange(81.).view(1, 9, 9)
    dense = expand_by_grid(weight, grid_tensor(grid))
    assert dense.shape == (1, 13, 13)
    edges = torch.tensor([0] + grid).cumsum(0)
    for a in range(9):
        for b in range(9):
            block = dense[0, edges[a]:edges[a + 1], edges[b]:edges[b + 1]]
            assert torch.all(block == weight[0, a, b])
