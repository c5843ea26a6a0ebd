"""``'sat'``: the fused C++/OpenMP kernels as torch ops, their backward
and their cost."""
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_custom_ops

from pelk_mm.ops import PeripheralConv2d, paths
from pelk_mm.ops.csrc import build
from pelk_mm.ops.grid import expand_by_grid
from pelk_mm.ops.paths import sat


def _small_case(requires_grad=True):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    weight = torch.randn(3, 5, 5, dtype=torch.float64)
    grid = torch.tensor([2, 1, 3, 1, 2])
    return x.requires_grad_(requires_grad), \
        weight.requires_grad_(requires_grad), grid


@needs_custom_ops
def test_sat_ops_pass_torch_opcheck():
    """The custom ops' schemas, fake kernels (shapes and strides), autograd
    registration and their use by AOT autograd, as torch checks them."""
    x, weight, grid = _small_case()
    torch.library.opcheck(sat.sat_conv, (x, weight, grid))
    grad_out = torch.randn_like(x.detach())
    torch.library.opcheck(
        sat.sat_conv_weight_grad,
        (grad_out, x.detach(), weight.detach(), grid),
        test_utils=('test_schema', 'test_faketensor'))


def _copies(run) -> int:
    """How many tensor copies (``aten::copy_``) ``run()`` makes."""
    with torch.profiler.profile() as profile:
        run()
    return sum(event.name == 'aten::copy_' for event in profile.events())


def test_a_channel_slice_is_read_in_place():
    """A mixer's convolved channels (a slice: planes row-major, not the
    whole tensor contiguous) are read where they lie, with the same result
    as their copy, forward and weight gradient; nothing is copied."""
    torch.manual_seed(0)
    grid = torch.tensor([2, 1, 3, 1, 2])
    x = torch.randn(2, 8, 9, 11)[:, 2:5]
    grad_out = torch.randn(2, 8, 9, 11)[:, 1:4]
    weight = torch.randn(3, 5, 5)
    expected = (sat.sat_conv(x.contiguous(), weight, grid),
                sat.sat_conv_weight_grad(grad_out.contiguous(), x.contiguous(),
                                         weight, grid))
    got = (sat.sat_conv(x, weight, grid),
           sat.sat_conv_weight_grad(grad_out, x, weight, grid))
    for out, want in zip(got, expected):
        assert torch.equal(out, want)
    assert _copies(lambda: sat.sat_conv(x, weight, grid)) == 0
    assert _copies(
        lambda: sat.sat_conv_weight_grad(grad_out, x, weight, grid)) == 0
    # What is not row-major per plane is copied once.
    column_major = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert _copies(lambda: sat.sat_conv(column_major, weight, grid)) == 1


def test_sat_second_derivatives(rel_err):
    """The input gradient is the conv with the flipped kernel, so it is
    differentiable again (checked against the dense conv's second
    derivative); the gradient of the block weights is not, and says so
    instead of silently giving zeros."""
    x, weight, grid = _small_case()

    def second_derivatives(out):
        grad_x, = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), (x, weight))

    ours = second_derivatives(sat.grid_depthwise_conv_sat(x, weight, grid))
    reference = second_derivatives(
        F.conv2d(
            x, expand_by_grid(weight, grid)[:, None], padding=4, groups=3))
    for got, want in zip(ours, reference):
        assert rel_err(got, want) < 1e-12
    out = sat.grid_depthwise_conv_sat(x, weight, grid)
    grad_w, = torch.autograd.grad(
        out.square().sum(), weight, create_graph=True)
    with pytest.raises(RuntimeError, match='not differentiable'):
        grad_w.sum().backward()


@needs_custom_ops
def test_sat_path_is_kept_by_torch_compile_and_export(
        kept_by_compile_and_export):
    """torch.compile traces the fused extension as a custom op (one graph,
    forward and backward the same as eager); torch.export keeps it in the
    exported program."""
    torch.manual_seed(0)
    conv = PeripheralConv2d(3, 31, bias=True, path='sat')
    x = torch.randn(2, 3, 20, 24, requires_grad=True)
    kept_by_compile_and_export(conv, x, 'pelk_mm.sat_conv.default')


def test_cost_model_pads_rows_as_the_extension_does():
    """The cost counts the padded columns the kernels compute: the Python
    constant is the C++ one, and a 7-column map costs what a 16-column one
    does."""
    with open(build._SOURCE) as f:
        (tile, ) = re.findall(r'constexpr int64_t kTile = (\d+);', f.read())
    assert sat.COLUMN_TILE == int(tile)
    path = sat.SatPath()
    narrow = paths.Request(13, 7, 7, num_cells=9)
    assert path.cost(narrow) == path.cost(narrow._replace(width=16))
