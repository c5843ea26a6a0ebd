"""``'triton'``: the summed-area-table kernels, run through
Triton's interpreter where no GPU is (conftest sets TRITON_INTERPRET=1
then): forward and both gradients against the float64 dense conv, half
precision, the module, the automatic choice, and the first-use check's
fallback to FFT."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from pelk_mm.ops import (KernelPositionEmbedding, PeripheralConv2d,
                         choose_path, expand_by_grid, forced_path,
                         sharing_grid, switches)
from pelk_mm.ops.grid import grid_tensor
from pelk_mm.ops.paths import first_use, triton_sat

pytestmark = pytest.mark.skipif(
    not triton_sat.available_on(
        torch.device('cuda' if torch.cuda.is_available() else 'cpu')),
    reason='no GPU and TRITON_INTERPRET is not 1')

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def triton_kernels():
    """The kernels' module (imported on first use, after TRITON_INTERPRET
    is set)."""
    from pelk_mm.ops.paths import triton_kernels
    return triton_kernels


# Float32 kernels against float64, relative to the largest value (measured
# 1e-7 to 4e-7 on these shapes).
TOLERANCE = 1e-5


def dense_conv(x, weight, grid, kernel_size):
    kernel = expand_by_grid(weight, grid, kernel_size)
    return F.conv2d(
        x, kernel[:, None], padding=kernel_size // 2, groups=x.shape[1])


# (batch, channels, height, width, K): batch > 1, maps smaller than the
# kernel, rectangular maps, widths that are not a multiple of the kernels'
# 32-column blocks and wider than one.
SHAPES = [(2, 3, 9, 7, 13), (1, 2, 5, 6, 31), (3, 1, 12, 40, 5),
          (1, 2, 4, 3, 51)]


@pytest.mark.parametrize('shape', SHAPES)
def test_forward_and_gradients_match_the_dense_conv(shape, rel_err):
    torch.manual_seed(sum(shape))
    b, c, h, w, k = shape
    grid = grid_tensor(sharing_grid(k, center_size=min(5, k)))
    x = torch.randn(b, c, h, w, device=DEVICE, requires_grad=True)
    weight = torch.randn(
        c, len(grid), len(grid), device=DEVICE, requires_grad=True)
    out = triton_kernels().grid_depthwise_conv_triton(x, weight, grid, k)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, weight), grad_out)

    x64 = x.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    expected = dense_conv(x64, w64, grid.to(DEVICE), k)
    expected_grads = torch.autograd.grad(expected, (x64, w64),
                                         grad_out.double())
    assert out.dtype == torch.float32 and out.shape == (b, c, h, w)
    assert rel_err(out, expected) < TOLERANCE
    for grad, ref in zip(grads, expected_grads):
        assert rel_err(grad, ref) < TOLERANCE


@pytest.mark.parametrize('dtype, tolerance', [(torch.float16, 2e-3),
                                              (torch.bfloat16, 1e-2)])
def test_half_precision_inputs_accumulate_in_float32(dtype, tolerance,
                                                     rel_err):
    """Half inputs are read into float32 sums and the output rounded once:
    within one rounding of the output's dtype (the bounds of the other
    paths' half-precision tests)."""
    torch.manual_seed(0)
    grid = grid_tensor(sharing_grid(13))
    x = torch.randn(2, 3, 10, 9, device=DEVICE).to(dtype)
    weight = torch.randn(3, len(grid), len(grid), device=DEVICE)
    out = triton_kernels().grid_depthwise_conv_triton(x, weight, grid, 13)
    expected = dense_conv(x.double(), weight.double(), grid.to(DEVICE), 13)
    assert out.dtype == dtype
    assert rel_err(out, expected) < tolerance


def test_module_with_positional_term_and_bias(rel_err):
    torch.manual_seed(0)
    pos_embed = KernelPositionEmbedding(4, 13, std=0.5).to(DEVICE)
    conv = PeripheralConv2d(
        4, 13, bias=True, pos_embed=pos_embed, path='triton').to(DEVICE)
    x = torch.randn(2, 4, 8, 11, device=DEVICE, requires_grad=True)
    out = conv(x)
    ref = conv.forward_reference(x)
    assert rel_err(out, ref.double()) < TOLERANCE
    params = [x, conv.weight, conv.bias, pos_embed.weight]
    grads = torch.autograd.grad(out.sum(), params)
    ref_grads = torch.autograd.grad(ref.sum(), params)
    for grad, ref_grad in zip(grads, ref_grads):
        assert rel_err(grad, ref_grad.double()) < TOLERANCE


@pytest.fixture
def fresh_checks(monkeypatch):
    """A process in which no shape class has been checked yet."""
    first_use.forget()
    yield
    first_use.forget()


def test_kernels_that_disagree_fall_back_to_fft_with_one_warning(
        monkeypatch, fresh_checks, rel_err):
    kernels = triton_kernels()
    forward = kernels._forward
    monkeypatch.setattr(
        kernels, '_forward',
        lambda *args: forward(*args) * 1.01)  # a kernel that is 1% off
    conv = PeripheralConv2d(3, 13, path='triton').to(DEVICE)
    x = torch.randn(1, 3, 9, 9, device=DEVICE)
    with pytest.warns(
            UserWarning, match="disagree with the 'fft' path by "
            '1.0e-02'):
        out = conv(x)
    assert rel_err(out, conv.forward_reference(x).double()) < TOLERANCE
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('error')
        conv(x)  # decided: no second check, no second warning


def test_kernels_that_fail_to_compile_fall_back_to_fft(monkeypatch,
                                                       fresh_checks, rel_err):

    def broken(*args):
        raise RuntimeError('PTXASError: ptxas fatal')

    monkeypatch.setattr(triton_kernels(), '_forward', broken)
    conv = PeripheralConv2d(3, 13, path='triton').to(DEVICE)
    x = torch.randn(1, 3, 9, 9, device=DEVICE)
    with pytest.warns(UserWarning, match='kernels failed .*ptxas fatal'):
        out = conv(x)
    assert rel_err(out, conv.forward_reference(x).double()) < TOLERANCE


def test_cuda_choice_offers_the_kernels_on_small_maps(monkeypatch):
    """The reasoned (not measured) CUDA constants: the kernels' cost grows
    with k'^2 per pixel, FFT's with the padded map, so the kernels win on
    late-stage maps; PELK_MM_TRITON=0 takes them out of the choice."""
    monkeypatch.setattr(triton_sat, 'available_on', lambda device: True)
    assert choose_path(47, 14, 14, True, 13, 'cuda') == 'triton'
    assert choose_path(51, 56, 56, True, 13, 'cuda') == 'fft'
    assert choose_path(5, 56, 56, False, 5, 'cuda') == 'direct'
    assert choose_path(51, 14, 14, num_cells=13, device='cpu') != 'triton'
    switches.set_triton_allowed(False)
    assert choose_path(47, 14, 14, True, 13, 'cuda') == 'fft'


def test_forcing_triton_where_it_cannot_run_is_refused(monkeypatch):
    monkeypatch.setattr(triton_sat, 'available_on', lambda device: False)
    with forced_path('triton'), pytest.raises(
            ValueError,
            match="PELK_MM_PATH=triton cannot run here: the 'triton' path "
            'runs on CUDA devices'):
        choose_path(51, 64, 64, num_cells=13)
    conv = PeripheralConv2d(2, 13, path='triton')
    with pytest.raises(
            RuntimeError,
            match="path='triton' cannot run here: the 'triton' path runs "
            'on CUDA'):
        conv(torch.randn(1, 2, 8, 8))


def test_kernels_launch_on_the_device_of_their_tensors(monkeypatch):
    """Triton launches on the current CUDA device; the forward and both
    gradients run under a guard that makes it the input's (a ``cuda:1``
    model without ``set_device``)."""
    from pelk_mm.ops.paths import triton_kernels
    entered = []
    real = triton_kernels.launching_on

    def recording(device):
        entered.append(device)
        return real(device)

    monkeypatch.setattr(triton_kernels, 'launching_on', recording)
    grid = grid_tensor(sharing_grid(13))
    x = torch.randn(1, 2, 9, 9, requires_grad=True)
    weight = torch.randn(2, len(grid), len(grid), requires_grad=True)
    out = triton_kernels.grid_depthwise_conv_triton(x, weight, grid, 13)
    out.sum().backward()
    assert entered == [x.device, x.device]  # forward, backward
    # On CUDA the guard is torch's device context of that device.
    guard = real(torch.device('cuda', 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(real(torch.device('cpu')), torch.cuda.device)
