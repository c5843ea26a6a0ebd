"""The token mixer of a PeLK block: partial peripheral conv + small
kernel, and its deployed form."""
import pytest
import torch

from pelk_mm.models import PeripheralMixer
from pelk_mm.ops import KernelPositionEmbedding


def rel_err(actual, expected):
    return ((actual - expected).abs().max() /
            expected.abs().max().clamp_min(1e-12)).item()


def test_bad_mixer_arguments():
    with pytest.raises(ValueError, match='small_kernel'):
        PeripheralMixer(16, 13, center_size=3, small_kernel=5)
    with pytest.raises(ValueError, match='partial_ratio'):
        PeripheralMixer(16, 13, partial_ratio=0.)


def test_partial_channels_pass_as_identity():
    torch.manual_seed(0)
    mixer = PeripheralMixer(16, 13, partial_ratio=3 / 8)
    assert mixer.conv_channels == 6
    x = torch.randn(2, 16, 12, 12)
    y = mixer(x)
    assert y.shape == x.shape
    assert torch.equal(y[:, 6:], x[:, 6:])
    assert not torch.allclose(y[:, :6], x[:, :6])


@pytest.mark.parametrize('kernel_size, center_size, small_kernel, pos',
                         [(51, 5, 5, True), (31, 5, 3, True),
                          (101, 7, 5, True), (13, 5, None, True),
                          (31, 5, 5, False)])
def test_switch_to_deploy_keeps_outputs(kernel_size, center_size, small_kernel,
                                        pos):
    torch.manual_seed(0)
    pos_embed = KernelPositionEmbedding(6, kernel_size, std=0.5) \
        if pos else None
    mixer = PeripheralMixer(
        16,
        kernel_size,
        center_size,
        small_kernel=small_kernel,
        pos_embed=pos_embed)
    # Non-trivial BN statistics and affine parameters.
    mixer.train()
    for _ in range(3):
        mixer(torch.randn(4, 16, 20, 20) * 3 + 1)
    for norm in (mixer.large_norm, mixer.small_norm):
        if norm is not None:
            norm.weight.data.uniform_(0.5, 2)
            norm.bias.data.uniform_(-1, 1)
    mixer.eval()
    x = torch.randn(2, 16, 23, 18)
    expected = mixer(x)
    num_cells = len(mixer.large.grid)
    mixer.switch_to_deploy()
    assert mixer.deploy and mixer.large.weight.shape[-1] == num_cells
    assert mixer.large.deploy and mixer.large_norm is mixer.small is None
    assert 'large_norm.weight' not in mixer.state_dict()
    assert rel_err(mixer(x), expected) < 1e-5
    assert rel_err(mixer.large.forward_reference(x[:, :6]),
                   mixer(x)[:, :6]) < 1e-5
