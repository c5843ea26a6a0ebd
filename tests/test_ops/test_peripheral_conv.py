"""The peripheral conv module and its functional forms, through every
path of the registry: against the dense reference and Eq. 3 literally, in
float64 gradcheck and half precision."""
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import CPU_HALF_CONV, needs_custom_ops

from pelk_mm.ops import (KernelPositionEmbedding, PeripheralConv2d,
                         expand_by_grid, peripheral_conv2d)


def make_conv(channels,
              kernel_size,
              pos=True,
              bias=True,
              dtype=torch.float32,
              **kwargs):
    pos_embed = KernelPositionEmbedding(channels, kernel_size, std=0.5)
    conv = PeripheralConv2d(
        channels,
        kernel_size,
        bias=bias,
        pos_embed=pos_embed if pos else None,
        **kwargs)
    return conv.to(dtype), pos_embed.to(dtype)


def eq3_literal(x, kernel, pos_embed, border):
    """Eq. 3 term by term: sum_ij W(i,j) * (X(x+i, y+j) + h(i,j))."""
    channels, size = kernel.shape[0], kernel.shape[-1]
    b, _, height, width = x.shape
    patches = F.unfold(
        x, size, padding=size // 2).view(b, channels, size * size,
                                         height * width)
    inside = F.unfold(
        torch.ones_like(x[:1, :1]), size,
        padding=size // 2).view(1, 1, size * size, -1)
    h = pos_embed.reshape(1, channels, size * size, 1)
    if border == 'valid':
        h = h * inside  # h only where the tap lands on the image
    y = (kernel.reshape(1, channels, size * size, 1) * (patches + h)).sum(2)
    return y.view(b, channels, height, width)


# Float32 tolerance of every path, relative to the largest reference value.
FLOAT32_TOLERANCE = 1e-4

# (batch, channels, height, width, kernel): odd and even sizes, maps smaller
# than the kernel, rectangular maps, batch > 1.
SHAPES = [(2, 3, 20, 17, 13), (1, 4, 9, 12, 31), (2, 2, 33, 32, 51),
          (3, 5, 8, 7, 51), (1, 2, 64, 40, 101), (2, 3, 5, 5, 5)]


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('border', ['valid', 'padded'])
def test_forward_backward_match_reference(shape, any_path, border, rel_err):
    torch.manual_seed(sum(shape))
    b, c, h, w, k = shape
    center = 5 if k >= 5 else 1
    conv, pos_embed = make_conv(
        c, k, path=any_path, pos_border=border, center_size=center)
    x = torch.randn(b, c, h, w, requires_grad=True)
    grad_out = torch.randn(b, c, h, w)

    out = conv(x)
    grads = torch.autograd.grad((out * grad_out).sum(),
                                [x, conv.weight, conv.bias, pos_embed.weight])
    ref = conv.forward_reference(x)
    ref_grads = torch.autograd.grad(
        (ref * grad_out).sum(), [x, conv.weight, conv.bias, pos_embed.weight])

    assert out.shape == (b, c, h, w)
    assert rel_err(out, ref) < FLOAT32_TOLERANCE
    for grad, ref_grad in zip(grads, ref_grads):
        assert rel_err(grad, ref_grad) < FLOAT32_TOLERANCE


@pytest.mark.parametrize('border', ['valid', 'padded'])
def test_positional_term_is_eq3(border, rel_err):
    torch.manual_seed(0)
    conv, pos_embed = make_conv(
        3, 13, bias=False, dtype=torch.float64, pos_border=border)
    x = torch.randn(2, 3, 9, 16, dtype=torch.float64)
    expected = eq3_literal(x, conv.expand_kernel(), pos_embed.weight, border)
    assert rel_err(conv(x), expected) < 1e-10
    assert rel_err(conv.forward_reference(x), expected) < 1e-10


def test_valid_border_is_positional_and_padded_is_a_bias():
    torch.manual_seed(0)
    x = torch.zeros(1, 2, 30, 30, dtype=torch.float64)
    valid, pos_embed = make_conv(2, 13, bias=False, dtype=torch.float64)
    padded = copy.deepcopy(valid)
    padded.pos_border = 'padded'
    y_valid, y_padded = valid(x), padded(x)
    # Interior pixels (kernel fully inside) agree; the border differs.
    assert torch.allclose(y_valid[..., 6:-6, 6:-6], y_padded[..., 6:-6, 6:-6])
    assert not torch.allclose(y_valid[..., 0, 0], y_padded[..., 0, 0])
    assert torch.allclose(y_padded, y_padded[..., :1, :1].expand_as(y_padded))


@pytest.mark.parametrize('border', ['valid', 'padded'])
def test_gradcheck_float64(grid_path, border):
    torch.manual_seed(0)
    grid = PeripheralConv2d(2, 13).grid_widths

    def peripheral(x, weight, bias, h):
        kernel = expand_by_grid(weight, grid)
        return peripheral_conv2d(
            x, weight, kernel * h, border, bias, grid_path, grid=grid)

    inputs = [
        torch.randn(1, 2, 7, 6),
        torch.randn(2, 9, 9),
        torch.randn(2),
        torch.randn(2, 13, 13)
    ]
    inputs = [t.double().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(peripheral, inputs)


def test_expand_kernel_shape_and_parameter_count():
    conv = PeripheralConv2d(46, 51)
    assert conv.weight.shape == (46, 13, 13)
    assert conv.expand_kernel().shape == (46, 51, 51)
    assert sum(p.numel() for p in conv.parameters()) == 46 * 169


def test_block_weights_saved_as_a_depthwise_conv_load():
    """Checkpoints holding the block weights as (C, 1, k', k'), as
    ``nn.Conv2d`` would store them, load into the (C, k', k') parameter."""
    torch.manual_seed(0)
    source = PeripheralConv2d(4, 13, bias=True)
    state = source.state_dict()
    state['weight'] = state['weight'].unsqueeze(1)
    target = PeripheralConv2d(4, 13, bias=True)
    target.load_state_dict(state)
    assert torch.equal(target.weight, source.weight)
    x = torch.randn(1, 4, 10, 10)
    assert torch.equal(target(x), source(x))
    wrong = dict(state, weight=torch.zeros(4, 2, 7, 7))
    with pytest.raises(RuntimeError, match='size mismatch for weight'):
        target.load_state_dict(wrong)


def test_bad_conv_arguments_and_inputs():
    with pytest.raises(ValueError, match='odd'):
        PeripheralConv2d(4, 50)
    with pytest.raises(ValueError, match='path must be one of'):
        PeripheralConv2d(4, 13, path='winograd')
    with pytest.raises(ValueError, match='pos_border must be one of'):
        PeripheralConv2d(4, 13, pos_border='zeros')
    with pytest.raises(ValueError, match=r'needs \(4, 13, 13\)'):
        PeripheralConv2d(4, 13, pos_embed=KernelPositionEmbedding(4, 11))
    conv = PeripheralConv2d(4, 13)
    with pytest.raises(
            ValueError, match=r'expects input of shape \(B, 4, H, W\)'):
        conv(torch.randn(1, 3, 16, 16))


def test_functional_api_refuses_what_paths_would_read_differently():
    """A grid that does not sum to kernel_size, an even dense kernel and a
    positional kernel of another size gave path-dependent answers (or ran)
    before; each is refused naming the argument."""
    x = torch.randn(1, 4, 16, 16)
    weights = torch.randn(4, 3, 3)
    grid = torch.tensor([4, 5, 4])
    with pytest.raises(ValueError, match=r'sums to 13, not kernel_size 15'):
        peripheral_conv2d(x, weights, grid=grid, kernel_size=15)
    with pytest.raises(ValueError, match='odd kernel size, got 12'):
        peripheral_conv2d(x, weights, grid=torch.tensor([4, 4, 4]))
    with pytest.raises(ValueError, match='odd kernel size, got 12'):
        peripheral_conv2d(x, torch.randn(4, 12, 12), path='direct')
    with pytest.raises(
            ValueError,
            match=r'pos_kernel \(4, 11, 11\): '
            r'expected \(4, 13, 13\)'):
        peripheral_conv2d(
            x, weights, grid=grid, pos_kernel=torch.randn(4, 11, 11))
    with pytest.raises(ValueError, match=r'one width per cell'):
        peripheral_conv2d(x, weights, grid=torch.tensor([6, 7]))
    with pytest.raises(
            ValueError, match=r'got x \(1, 4, 16, 16\), kernel '
            r'\(3, 13, 13\)'):
        peripheral_conv2d(x, torch.randn(3, 13, 13))


def test_an_empty_batch_gives_an_empty_output(grid_path):
    conv, _ = make_conv(3, 13, path=grid_path)
    for shape in ((0, 3, 16, 16), (2, 3, 0, 16)):
        x = torch.randn(*shape, requires_grad=True)
        y = conv(x)
        assert y.shape == x.shape
        y.sum().backward()
        assert x.grad.shape == x.shape


def test_shared_positional_embedding_is_referenced_not_registered():
    pos_embed = KernelPositionEmbedding(4, 13)
    conv_a = PeripheralConv2d(4, 13, pos_embed=pos_embed)
    conv_b = PeripheralConv2d(4, 13, pos_embed=pos_embed)
    assert conv_a.pos_embed is conv_b.pos_embed is pos_embed.weight
    assert set(conv_a.state_dict()) == {'weight'}


# Unit roundoff of the half types: 2^-p for a p-bit significand.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


@pytest.mark.parametrize(
    'dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
def test_half_precision_within_derived_bound(grid_path, dtype):
    """Half inputs: each result element is within one rounding of its
    reference, ``|y - y*| <= u |y*|``, plus the float32 error.

    The other paths (FFT, summed-area tables) compute in float32 and round
    once where they store a result, so their reference is exact (float64
    on the same rounded inputs). The direct path is torch's half conv, whose
    accumulation is the backend's choice (oneDNN keeps less than float32 in
    some backward kernels, and not on every CPU alike): its reference is
    that same conv, and what the path adds to it, the expansion and the
    block-weight gradient summed over the cells (in float32), is held to
    the same bound. No tolerance here depends on the machine.
    """
    if dtype == torch.float16 and grid_path == 'direct' and not CPU_HALF_CONV:
        pytest.skip("this torch's CPU has no float16 conv")
    torch.manual_seed(0)
    grid = PeripheralConv2d(3, 31).grid_widths
    x = torch.randn(2, 3, 24, 20).to(dtype).requires_grad_()
    weight = (torch.randn(3, 11, 11) / 31).to(dtype).requires_grad_()
    grad_out = torch.randn(2, 3, 24, 20).to(dtype)
    out = peripheral_conv2d(x, weight, path=grid_path, grid=grid)
    assert out.dtype == dtype
    grads = torch.autograd.grad(out, [x, weight], grad_out)

    w64 = weight.detach().double().requires_grad_()
    kernel64 = expand_by_grid(w64, grid)
    if grid_path == 'direct':
        x_ref = x.detach().requires_grad_()
        kernel = kernel64.detach().to(dtype).requires_grad_()  # exact
        ref = F.conv2d(x_ref, kernel[:, None], padding=15, groups=3)
        grad_x, grad_kernel = torch.autograd.grad(ref, [x_ref, kernel],
                                                  grad_out)
        grad_w, = torch.autograd.grad(kernel64, w64, grad_kernel.double())
        ref, ref_grads = ref.double(), [grad_x.double(), grad_w]
    else:
        x64 = x.detach().double().requires_grad_()
        ref = F.conv2d(x64, kernel64[:, None], padding=15, groups=3)
        ref_grads = torch.autograd.grad(ref, [x64, w64], grad_out.double())

    unit = UNIT_ROUNDOFF[dtype]
    for result, expected in zip([out, *grads], [ref, *ref_grads]):
        assert result.dtype == dtype
        bound = unit * expected.abs() + \
            FLOAT32_TOLERANCE * expected.abs().max()
        excess = (result.double() - expected).abs() - bound
        assert excess.max() <= 0, (
            f'{excess.gt(0).sum()} elements beyond the bound, the largest '
            f'error {(result.double() - expected).abs().max():.3g}')


@pytest.mark.gpu
@pytest.mark.parametrize(
    'dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
def test_cuda_paths_under_autocast_match_float32(cuda_path, dtype, rel_err):
    """On the GPU under autocast, as mixed-precision training runs it: the
    output and both gradients within a few half-precision roundings
    (norm-wise) of the float32 reference."""
    torch.manual_seed(0)
    conv, pos_embed = make_conv(6, 31, path=cuda_path)
    conv, pos_embed = conv.cuda(), pos_embed.cuda()
    x = torch.randn(2, 6, 40, 36, device='cuda', requires_grad=True)
    grad_out = torch.randn(2, 6, 40, 36, device='cuda')
    leaves = [x, conv.weight, conv.bias, pos_embed.weight]
    with torch.autocast('cuda', dtype=dtype):
        out = conv(x)
    grads = torch.autograd.grad(out.float(), leaves, grad_out)
    ref = conv.forward_reference(x)
    ref_grads = torch.autograd.grad(ref, leaves, grad_out)
    unit = UNIT_ROUNDOFF[dtype]
    assert rel_err(out.float(), ref) < 4 * unit
    for grad, ref_grad in zip(grads, ref_grads):
        assert rel_err(grad.float(), ref_grad) < 16 * unit


@needs_custom_ops
@pytest.mark.parametrize('border', ['valid', 'padded'])
def test_a_compiled_deployed_conv_reads_its_positional_table(border, rel_err):
    """A deployed conv keeps the summed-area table of its frozen W * h: a
    compiled graph reads the positional term from it (no cumulative sum
    per call) and equals eager, also after new weights are loaded."""
    torch.manual_seed(0)
    pos_embed = KernelPositionEmbedding(3, 13, std=0.5)
    conv = PeripheralConv2d(3, 13, pos_embed=pos_embed, pos_border=border)
    x = torch.randn(1, 3, 9, 10)
    with torch.no_grad():
        expected = conv(x)
        conv.set_deployed(conv.weight.clone(), torch.zeros(3),
                          conv._pos_kernel().clone())
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(conv, backend=backend, fullgraph=True)
    with torch.no_grad():
        assert rel_err(compiled(x), expected) < 1e-6
        # (The grid's cell edges are a cumulative sum of k' widths.)
        summed = [
            node.meta['example_value'].shape for node in graphs[0].graph.nodes
            if 'cumsum' in str(node.target)
        ]
        assert all(len(shape) == 1 for shape in summed), summed
        other = copy.deepcopy(conv)
        other.pos_kernel.mul_(2)
        conv.load_state_dict(other.state_dict())
        torch._dynamo.reset()
        compiled = torch.compile(conv, backend=backend, fullgraph=True)
        assert rel_err(compiled(x), other(x)) < 1e-6
        assert rel_err(compiled(x), expected) > 1e-3


def test_every_path_writes_into_out_at_a_channel_offset(grid_path, rel_err):
    """``out=`` (what a deployed mixer passes: its output's channels of the
    conv) is written where it lies, addend included, by every path; the
    other channels are left as they were; with gradients the write is a
    differentiable copy."""
    torch.manual_seed(0)
    conv, _ = make_conv(3, 13, path=grid_path)
    x = torch.randn(2, 3, 11, 10)
    expected = conv.forward_reference(x).detach()
    whole = torch.full((2, 7, 11, 10), 5.)
    with torch.no_grad():
        conv.set_deployed(conv.weight.clone(), conv.bias.clone(),
                          conv._pos_kernel().clone())
        written = conv(x, out=whole[:, 2:5])
    assert written.data_ptr() == whole[:, 2:5].data_ptr()
    assert rel_err(whole[:, 2:5], expected) < FLOAT32_TOLERANCE
    assert (whole[:, :2] == 5).all() and (whole[:, 5:] == 5).all()

    trained, pos_embed = make_conv(3, 13, path=grid_path)
    whole = torch.zeros(2, 7, 11, 10)
    out = trained(x, out=whole[:, 2:5])
    weight_grad, = torch.autograd.grad(whole.sum(), trained.weight)
    ref_grad, = torch.autograd.grad(
        trained.forward_reference(x).sum(), trained.weight)
    assert rel_err(out, trained.forward_reference(x)) < FLOAT32_TOLERANCE
    assert rel_err(weight_grad, ref_grad) < FLOAT32_TOLERANCE
