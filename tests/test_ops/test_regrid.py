"""Loading a checkpoint trained at one kernel size into another (51 -> 101)."""
import pytest
import torch

from pelk_mm.models import PeLK
from pelk_mm.ops import (block_mean, expand_by_grid, infer_center_size,
                         regrid_weight, resize_dense, sharing_grid)
from pelk_mm.ops.grid import grid_tensor

# PeLK-T's first stage (51, 5x5 centre) and PeLK-101's (101, 7x7 centre).
GRID_51 = sharing_grid(51, 5)
GRID_101 = sharing_grid(101, 7)
ARCH_51 = dict(
    depths=[1, 1, 1, 1],
    channels=[16, 24, 32, 40],
    kernel_sizes=[51, 49, 47, 13],
    center_size=5)
ARCH_101 = dict(ARCH_51, kernel_sizes=[101, 69, 67, 13], center_size=7)


def dense(weight, grid):
    return expand_by_grid(weight, grid_tensor(grid))


def test_infer_center_size():
    assert infer_center_size(51, 13) == 5
    assert infer_center_size(51, 15) == 7
    assert infer_center_size(101, 17) == 7
    with pytest.raises(ValueError, match='no sharing grid of a 51x51'):
        infer_center_size(51, 12)
    # 9 has 7 cells with a 3x3 and with a 5x5 centre: the preferred wins.
    assert infer_center_size(9, 7) == 5
    assert infer_center_size(9, 7, prefer=(3, )) == 3
    with pytest.raises(ValueError, match='centre sizes \\[3, 5\\]'):
        infer_center_size(9, 7, prefer=())


def test_block_mean_inverts_expansion():
    weight = torch.randn(3, 13, 13)
    assert torch.allclose(
        block_mean(dense(weight, GRID_51), GRID_51), weight, atol=1e-6)


def test_block_mean_is_the_least_squares_projection():
    target = torch.randn(51, 51)
    best = dense(block_mean(target, GRID_51), GRID_51)
    # Any other kernel constant on the blocks is farther from the target.
    for _ in range(5):
        other = dense(
            block_mean(target, GRID_51) + 0.01 * torch.randn(13, 13), GRID_51)
        assert (other - target).norm() > (best - target).norm()


def test_pad_keeps_the_sum_and_the_centre_when_growing():
    weight = torch.randn(4, 1, 13, 13, dtype=torch.float64)
    grown = regrid_weight(weight, GRID_51, GRID_101, 'pad')
    assert grown.shape == (4, 1, 17, 17)
    before, after = dense(weight, GRID_51), dense(grown, GRID_101)
    # The response to a flat input is unchanged.
    assert torch.allclose(after.sum((-1, -2)), before.sum((-1, -2)))
    # The 7x7 dense centre of the new grid holds the old kernel's taps.
    assert torch.equal(after[..., 47:54, 47:54], before[..., 22:29, 22:29])
    # Nothing lands beyond the old kernel's extent (+ the block it ends in).
    assert after[..., :8, :].abs().max() == 0


def test_pad_shrinks_to_the_centre_crop():
    weight = torch.randn(2, 13, 13)
    shrunk = regrid_weight(weight, GRID_51, sharing_grid(31, 5), 'pad')
    expected = block_mean(
        dense(weight, GRID_51)[..., 10:41, 10:41], sharing_grid(31, 5))
    assert torch.allclose(shrunk, expected)


def test_interpolate_stretches_the_kernel_and_keeps_its_mass():
    weight = torch.ones(1, 13, 13)
    grown = regrid_weight(weight, GRID_51, GRID_101, 'interpolate')
    after = dense(grown, GRID_101)
    assert torch.allclose(after, torch.full_like(after, (51 / 101)**2))
    with pytest.raises(ValueError, match='mode must be one of'):
        resize_dense(torch.ones(5, 5), 7, 'nearest')


def test_same_grid_is_left_alone():
    weight = torch.randn(2, 13, 13)
    assert regrid_weight(weight, GRID_51, GRID_51) is weight


def save(model, path):
    torch.save(
        {
            'state_dict': {
                f'backbone.{k}': v
                for k, v in model.state_dict().items()
            }
        }, path)


def pretrained(path):
    return dict(type='Pretrained', checkpoint=str(path), prefix='backbone.')


@pytest.mark.parametrize('mode', ['pad', 'interpolate'])
def test_backbone_loads_a_51_checkpoint_into_101(tmp_path, mode,
                                                 mmlogger_records):
    torch.manual_seed(0)
    source = PeLK(ARCH_51)
    save(source, tmp_path / 'pelk51.pth')
    model = PeLK(
        ARCH_101,
        kernel_resize=mode,
        init_cfg=pretrained(tmp_path / 'pelk51.pth'))
    model.init_weights()
    text = '\n'.join(r.getMessage() for r in mmlogger_records)
    assert 'size mismatch' not in text and 'missing keys' not in text
    assert ('stages.0: re-gridded the peripheral kernels and the positional '
            f'embedding of the checkpoint from 51x51 (grid {GRID_51}) to '
            f"101x101 (grid {GRID_101}) (kernel_resize='{mode}')") in text
    # 13 stays 13, but the 7x7 centre of PeLK-101 changes its grid.
    assert (f'stages.3: re-gridded the peripheral kernels and the positional '
            f'embedding of the checkpoint from 13x13 (grid '
            f'{sharing_grid(13, 5)}) to 13x13 (grid {sharing_grid(13, 7)})'
            ) in text
    loaded, original = model.state_dict(), source.state_dict()
    for key, value in original.items():
        if loaded[key].shape == value.shape:
            assert torch.equal(loaded[key], value), key
    for stage, old, new in ((0, 51, 101), (1, 49, 69), (2, 47, 67), (3, 13,
                                                                     13)):
        key = f'stages.{stage}.blocks.0.mixer.large.weight'
        old_grid = sharing_grid(old, 5)
        new_grid = sharing_grid(new, 7)
        expected = regrid_weight(original[key], old_grid, new_grid, mode)
        assert torch.equal(loaded[key], expected), key
        pos = loaded[f'stages.{stage}.pos_embed.weight']
        assert pos.shape[-1] == new
    if mode == 'pad':  # h is zero beyond the old extent, the same inside
        pos = loaded['stages.0.pos_embed.weight']
        assert pos[:, :25].abs().max() == 0
        assert torch.equal(pos[:, 25:76, 25:76],
                           original['stages.0.pos_embed.weight'])
    # The re-gridded model runs.
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 40)


def test_backbone_loads_101_into_51_and_back_to_the_same_shapes(tmp_path):
    save(PeLK(ARCH_101), tmp_path / 'pelk101.pth')
    model = PeLK(ARCH_51, init_cfg=pretrained(tmp_path / 'pelk101.pth'))
    model.init_weights()
    assert model.stages[0].blocks[0].mixer.large.weight.shape[-1] == 13


def test_refusal_names_both_kernel_sizes_and_the_fix(tmp_path):
    save(PeLK(ARCH_51), tmp_path / 'pelk51.pth')
    model = PeLK(
        ARCH_101,
        kernel_resize=None,
        init_cfg=pretrained(tmp_path / 'pelk51.pth'))
    with pytest.raises(
            ValueError,
            match=r"stages.0: the checkpoint was trained with "
            r"51x51 kernels on other sharing grids than this "
            r"model's 101x101 ones; set kernel_resize='pad' or "
            r"'interpolate'"):
        model.init_weights()
    with pytest.raises(ValueError, match='kernel_resize must be one of'):
        PeLK(ARCH_51, kernel_resize='nearest')


def test_checkpoint_without_positional_embedding_is_refused(tmp_path):
    save(PeLK(ARCH_51, pos_embed=False), tmp_path / 'nopos.pth')
    model = PeLK(
        ARCH_101, pos_embed=False, init_cfg=pretrained(tmp_path / 'nopos.pth'))
    with pytest.raises(ValueError, match='no positional embedding that tells'):
        model.init_weights()
