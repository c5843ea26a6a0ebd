"""The token mixer of a PeLK block: partial peripheral conv + small
kernel, and its deployed form."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pelk_mm.models import PeripheralMixer
from pelk_mm.ops import KernelPositionEmbedding
from pelk_mm.ops.paths import relative_error


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
    assert relative_error(mixer(x), expected) < 1e-5
    assert relative_error(
        mixer.large.forward_reference(x[:, :6]),
        mixer(x)[:, :6]) < 1e-5


class OutputShapes(TorchDispatchMode):
    """The (op name, output shape) of every aten op run under it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.seen.append((func.overloadpacket.__name__, out.shape))
        return out

    @classmethod
    def of(cls, module, *inputs):
        with cls() as ops:
            module(*inputs)
        return ops.seen


def test_deployed_mixer_writes_the_conv_into_its_output(grid_path):
    """Without gradients the deployed mixer's conv writes into its channels
    of the output (no concatenation copies them), with the same result as
    the concatenation form (with gradients, and in traced graphs)."""
    torch.manual_seed(0)
    mixer = PeripheralMixer(
        16,
        13,
        pos_embed=KernelPositionEmbedding(6, 13, std=0.5),
        path=grid_path)
    mixer.eval()
    mixer.switch_to_deploy()
    x = torch.randn(2, 16, 12, 14)
    expected = mixer(x)  # gradients enabled: the concatenation
    with torch.no_grad(), OutputShapes() as ops:
        out = mixer(x)
    assert ('cat', x.shape) not in ops.seen
    assert ('cat', x.shape) in OutputShapes.of(mixer, x)  # (it can fail)
    assert relative_error(out, expected) < 1e-6
    assert torch.equal(out[:, 6:], x[:, 6:])
