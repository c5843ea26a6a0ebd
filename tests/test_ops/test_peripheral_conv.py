import copy
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pelk_mm.ops import (KernelPositionEmbedding, PeripheralConv2d,
                         choose_path, expand_by_grid,
                         grid_depthwise_conv_box_sums, peripheral_conv2d,
                         sharing_grid)
from pelk_mm.ops.grid import grid_tensor


def rel_err(actual, expected):
    return ((actual - expected).abs().max() /
            expected.abs().max().clamp_min(1e-12)).item()


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
@pytest.mark.parametrize('path', ['auto', 'direct', 'fft', 'sat'])
@pytest.mark.parametrize('border', ['valid', 'padded'])
def test_forward_backward_match_reference(shape, path, border):
    torch.manual_seed(sum(shape))
    b, c, h, w, k = shape
    center = 5 if k >= 5 else 1
    conv, pos_embed = make_conv(
        c, k, path=path, pos_border=border, center_size=center)
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


@pytest.mark.parametrize('shape', SHAPES)
def test_box_sums_in_standard_ops_match_the_dense_conv(shape):
    """The summed-area-table algorithm written in torch ops (what traced
    graphs run for the 'sat' path): forward, input and block-weight
    gradients against the dense conv in float64; float32 forward within
    the tolerance of every path."""
    torch.manual_seed(sum(shape))
    b, c, h, w, k = shape
    grid = grid_tensor(sharing_grid(k, center_size=5 if k >= 5 else 1))
    x = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(
        c, len(grid), len(grid), dtype=torch.float64, requires_grad=True)
    dense = F.conv2d(
        x, expand_by_grid(weight, grid)[:, None], padding=k // 2, groups=c)
    out = grid_depthwise_conv_box_sums(x, weight, grid, k)
    grad_out = torch.randn_like(dense)
    expected = torch.autograd.grad(dense, (x, weight), grad_out)
    grads = torch.autograd.grad(out, (x, weight), grad_out)
    assert rel_err(out, dense) < 1e-12
    for grad, ref_grad in zip(grads, expected):
        assert rel_err(grad, ref_grad) < 1e-12
    out32 = grid_depthwise_conv_box_sums(x.detach().float(),
                                         weight.detach().float(), grid)
    assert out32.dtype == torch.float32
    assert rel_err(out32.double(), dense) < FLOAT32_TOLERANCE


def test_sat_path_runs_box_sums_where_the_graph_is_traced(monkeypatch):
    """The fused extension is opaque to tracers: a traced 'sat' conv
    records the standard-op form, and the trace computes the same."""
    import pelk_mm.ops.sat as sat
    torch.manual_seed(0)
    conv, _ = make_conv(3, 31, pos=False, path='sat')
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        eager = conv(x)

    def opaque(*args):
        raise AssertionError('the fused extension ran inside a trace')

    monkeypatch.setattr(sat, 'grid_depthwise_conv_sat', opaque)
    with torch.no_grad():
        traced = torch.jit.trace(conv, x, check_trace=False)
    assert rel_err(traced(x), eager) < FLOAT32_TOLERANCE
    assert rel_err(traced(x[:1]), eager[:1]) < FLOAT32_TOLERANCE


@pytest.mark.parametrize('border', ['valid', 'padded'])
def test_positional_term_is_eq3(border):
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


@pytest.mark.parametrize('path', ['direct', 'fft', 'sat'])
@pytest.mark.parametrize('border', ['valid', 'padded'])
def test_gradcheck_float64(path, border):
    torch.manual_seed(0)
    grid = PeripheralConv2d(2, 13).grid_widths

    def peripheral(x, weight, bias, h):
        kernel = expand_by_grid(weight, grid)
        return peripheral_conv2d(
            x, weight, kernel * h, border, bias, path, grid=grid)

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


def test_automatic_path_choice():
    # Small kernels: the direct conv (oneDNN's depthwise kernel in inference).
    assert choose_path(5, 128, 128) == 'direct'
    assert choose_path(3, 56, 56, requires_grad=True) == 'direct'
    assert choose_path(13, 7, 7) == 'direct'
    assert choose_path(13, 64, 64) == 'direct'
    # Its backward has no fast kernel: training at K = 13 goes through FFT.
    assert choose_path(13, 64, 64, requires_grad=True) == 'fft'
    # Large kernels: the FFT path, without the grid (a dense kernel)...
    for k in (31, 51, 101):
        assert choose_path(k, 128, 128) == 'fft'
        assert choose_path(k, 56, 56, requires_grad=True) == 'fft'
    # ... and the fused summed-area tables with it, on the CPU only: their
    # cost grows with k'^2 and the map, not with the padding K adds, so they
    # win on the maps of PeLK's later stages and at K = 31-51 on large ones.
    for k, cells in ((31, 11), (51, 13), (101, 17), (151, 19)):
        for size in (16, 32, 64):
            assert choose_path(k, size, size, num_cells=cells) == 'sat'
            assert choose_path(k, size, size, True, num_cells=cells) == 'sat'
        assert choose_path(k, 64, 64, True, cells, 'cuda') == 'fft'
    assert choose_path(51, 128, 128, num_cells=13) == 'sat'
    # At K = 101 on 128x128 the two cost the same; training tips to FFT.
    assert choose_path(101, 128, 128, True, num_cells=17) == 'fft'
    # Small kernels in inference: still oneDNN's direct conv.
    assert choose_path(13, 64, 64, num_cells=9) == 'direct'


def test_cuda_choice_uses_its_own_constants(monkeypatch):
    """On CUDA: never the CPU extension; the direct conv for small kernels
    in inference, FFT for large ones (the reasoned default). Without the
    Triton kernels (PELK_MM_TRITON=0; their choice: test_triton_sat.py)."""
    from pelk_mm.ops import functional
    from pelk_mm.ops.functional import PATH_COSTS
    monkeypatch.setattr(functional, 'TRITON_ALLOWED', False)
    assert PATH_COSTS['cuda'] != PATH_COSTS['cpu']
    assert choose_path(5, 128, 128, device='cuda') == 'direct'
    assert choose_path(13, 14, 14, num_cells=9, device='cuda') == 'direct'
    for k, cells in ((51, 13), (101, 17)):
        for size in (14, 56, 128):
            assert choose_path(k, size, size, True, cells, 'cuda') == 'fft'
    # An FFT unit weighs more on CUDA: a small training kernel that the CPU
    # runs through FFT stays direct there.
    assert choose_path(7, 32, 32, True) == 'fft'
    assert choose_path(7, 32, 32, True, device='cuda') == 'direct'


@pytest.mark.parametrize('forced', ['direct', 'fft', 'sat'])
def test_pelk_mm_path_overrides_the_choice(monkeypatch, forced):
    from pelk_mm.ops import functional
    monkeypatch.setattr(functional, 'PATH_OVERRIDE', forced)
    assert choose_path(51, 64, 64, num_cells=13) == forced
    assert choose_path(3, 8, 8, True, 5) == forced
    conv = PeripheralConv2d(2, 13)
    x = torch.randn(1, 2, 12, 12)
    with torch.no_grad():
        assert torch.allclose(conv(x), conv.forward_reference(x), atol=1e-5)


def test_pelk_mm_path_refusals(monkeypatch):
    from pelk_mm.ops import functional
    monkeypatch.setattr(functional, 'PATH_OVERRIDE', 'sat')
    with pytest.raises(ValueError, match='block weights on a grid'):
        choose_path(51, 64, 64)
    monkeypatch.setattr(functional, 'PATH_OVERRIDE', 'fast')
    with pytest.raises(ValueError, match="PELK_MM_PATH must be one of"):
        choose_path(51, 64, 64)


def test_pelk_mm_path_is_read_from_the_environment():
    code = ('from pelk_mm.ops import choose_path; '
            'print(choose_path(51, 64, 64, num_cells=13))')
    out = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True,
                         env=dict(os.environ, PELK_MM_PATH='direct'))
    assert out.stdout.strip() == 'direct', out.stderr


def test_sat_path_needs_the_grid():
    with pytest.raises(ValueError, match="'sat' path works from the block"):
        peripheral_conv2d(
            torch.randn(1, 2, 8, 8), torch.randn(2, 13, 13), path='sat')


def test_sat_path_refuses_a_second_derivative():
    """Its C++ backward builds no graph: differentiating the gradient again
    must raise, not silently give zeros."""
    from pelk_mm.ops.sat import grid_depthwise_conv_sat
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)
    grid = torch.tensor([2, 1, 3, 1, 2])
    out = grid_depthwise_conv_sat(x, weight, grid)
    grad_x, = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable'):
        grad_x.sum().backward()


def test_auto_dispatches_by_grad_mode(monkeypatch):
    import pelk_mm.ops.functional as functional
    import pelk_mm.ops.sat as sat
    calls = []
    for module, name in ((functional, 'depthwise_conv_direct'),
                         (functional, 'depthwise_conv_fft'),
                         (sat, 'grid_depthwise_conv_sat')):
        original = getattr(module, name)
        monkeypatch.setattr(
            module,
            name,
            lambda *args, _name=name, _f=original: calls.append(_name) or _f(
                *args))
    conv = PeripheralConv2d(4, 13)
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        conv(x)  # inference at K = 13: oneDNN's depthwise kernel
    conv(x)  # training: its backward is slow; the fused tables
    conv.path = 'direct'
    conv(x)
    conv.path = 'fft'
    conv(x)
    assert calls == [
        'depthwise_conv_direct', 'grid_depthwise_conv_sat',
        'depthwise_conv_direct', 'depthwise_conv_fft'
    ]


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
@pytest.mark.parametrize('path', ['direct', 'fft', 'sat'])
def test_half_precision_within_derived_bound(path, dtype):
    """Half inputs: each result element is within one rounding of its
    reference, ``|y - y*| <= u |y*|``, plus the float32 error.

    The FFT and summed-area paths compute in float32 and round once where
    they store a result, so their reference is exact (float64 on the same
    rounded inputs). The direct path is torch's half conv, whose
    accumulation is the backend's choice (oneDNN keeps less than float32 in
    some backward kernels, and not on every CPU alike): its reference is
    that same conv, and what the path adds to it, the expansion and the
    block-weight gradient summed over the cells (in float32), is held to
    the same bound. No tolerance here depends on the machine.
    """
    torch.manual_seed(0)
    grid = PeripheralConv2d(3, 31).grid_widths
    x = torch.randn(2, 3, 24, 20).to(dtype).requires_grad_()
    weight = (torch.randn(3, 11, 11) / 31).to(dtype).requires_grad_()
    grad_out = torch.randn(2, 3, 24, 20).to(dtype)
    out = peripheral_conv2d(x, weight, path=path, grid=grid)
    assert out.dtype == dtype
    grads = torch.autograd.grad(out, [x, weight], grad_out)

    w64 = weight.detach().double().requires_grad_()
    kernel64 = expand_by_grid(w64, grid)
    if path == 'direct':
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


def test_sat_extension_builds_per_cpu(monkeypatch, tmp_path):
    """Compiled with -march=native: a home folder shared by two kinds of
    CPU gives each its own build."""
    import pelk_mm.ops.sat as sat
    monkeypatch.setenv('PELK_MM_EXT_DIR', str(tmp_path))
    here = sat.build_directory()
    assert here == sat.build_directory()
    assert sat.cpu_identity()
    monkeypatch.setattr(sat, 'cpu_identity', lambda: 'another CPU')
    assert sat.build_directory() != here


def test_asking_for_a_cost_never_builds_the_extension(monkeypatch, tmp_path):
    import pelk_mm.ops.sat as sat

    def build(*args, **kwargs):
        raise AssertionError('choose_path started a build')

    monkeypatch.setattr(sat, 'load', build)
    assert sat.is_built()  # built by make install: offered
    assert choose_path(51, 64, 64, True, num_cells=13) == 'sat'
    monkeypatch.setattr(sat, '_module', None)
    monkeypatch.setenv('PELK_MM_EXT_DIR', str(tmp_path))  # nothing built
    assert not sat.is_built()
    assert choose_path(51, 64, 64, True, num_cells=13) != 'sat'
    assert not list(tmp_path.rglob('*.so'))


def test_sat_extension_load_survives_a_killed_build(tmp_path):
    """A build killed half-way leaves torch's ``lock`` file behind; the next
    load must clear it instead of waiting for it forever."""
    import pelk_mm.ops.sat as sat
    sat.load()  # built (cached) in this installation's folder
    built = sat.build_directory()
    cached = tmp_path / osp.basename(built)
    shutil.copytree(built, cached)  # mtimes kept: nothing to rebuild
    (cached / 'lock').touch()  # the baton of a build that never finished
    run = subprocess.run(
        [sys.executable, '-c', 'from pelk_mm.ops import sat; sat.load()'],
        env=dict(os.environ, PELK_MM_EXT_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300)
    assert run.returncode == 0, run.stderr
    assert 'left by an extension build that was killed' in run.stderr
    assert not (cached / 'lock').exists()


@pytest.mark.gpu
@pytest.mark.parametrize(
    'dtype', [torch.bfloat16, torch.float16], ids=['bf16', 'fp16'])
@pytest.mark.parametrize('path', ['auto', 'direct', 'fft'])
def test_cuda_paths_under_autocast_match_float32(path, dtype):
    """On the GPU under autocast, as mixed-precision training runs it: the
    output and both gradients within a few half-precision roundings
    (norm-wise) of the float32 reference."""
    torch.manual_seed(0)
    conv, pos_embed = make_conv(6, 31, path=path)
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
