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
                         choose_path, expand_by_grid, forced_path, paths,
                         sharing_grid, switches)
from pelk_mm.ops.grid import grid_tensor
from pelk_mm.ops.paths import first_use, triton, triton_env

pytestmark = pytest.mark.skipif(
    not triton_env.available_on(
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
# strips and wider than one (40 and 300 columns in 16-column strips), maps
# taller than K (the stream's steps past the warm-up), and the widest strip
# (128 columns, a 256-column window, 32 padded edges) of K = 101.
SHAPES = [(2, 3, 9, 7, 13), (1, 2, 5, 6, 31), (3, 1, 12, 40, 5),
          (1, 2, 4, 3, 51), (1, 1, 70, 9, 13), (1, 1, 3, 300, 5),
          (1, 1, 5, 140, 101)]


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


def falls_back(conv, x, match, rel_err):
    """``conv(x)`` warns (``match``) and gives the reference's answer (the
    FFT path took over)."""
    with pytest.warns(UserWarning, match=match):
        out = conv(x)
    assert rel_err(out, conv.forward_reference(x).double()) < TOLERANCE


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
    falls_back(conv, x, "disagree with the 'fft' path by 1.0e-02", rel_err)
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
    falls_back(conv, x, 'kernels failed .*ptxas fatal', rel_err)


def test_first_use_with_gradients_checks_both_gradients(
        monkeypatch, fresh_checks, rel_err):
    kernels = triton_kernels()
    weight_grad = kernels._weight_grad
    monkeypatch.setattr(kernels, '_weight_grad',
                        lambda *args: weight_grad(*args) * 1.01)  # 1% off
    conv = PeripheralConv2d(3, 13, path='triton').to(DEVICE)
    x = torch.randn(1, 3, 9, 9, device=DEVICE)
    with pytest.warns(
            UserWarning, match='by 1.0e-02 .* in the weight gradient'):
        out = conv(x)
    out.sum().backward()
    ref = conv.forward_reference(x)
    expected, = torch.autograd.grad(ref.sum(), conv.weight)
    assert rel_err(conv.weight.grad, expected.double()) < TOLERANCE


def test_a_variant_checked_without_gradients_is_checked_with_them(
        monkeypatch, fresh_checks):
    kernels = triton_kernels()
    weight_grad = kernels._weight_grad
    monkeypatch.setattr(kernels, '_weight_grad',
                        lambda *args: weight_grad(*args) * 1.01)
    conv = PeripheralConv2d(3, 13, path='triton').to(DEVICE)
    x = torch.randn(1, 3, 9, 9, device=DEVICE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('error')
        conv(x)  # the forward kernels are right
    with pytest.warns(UserWarning, match='in the weight gradient'):
        conv(x)


def test_the_variant_with_an_addend_is_checked_on_its_own(
        monkeypatch, fresh_checks, rel_err):
    """Adding a term in the kernel is a variant of its own: a kernel right
    without one and wrong with one passes its plain check and falls back
    where a bias is added."""
    kernels = triton_kernels()
    launch = kernels.launch_conv

    def wrong_addend(x, weight, grid, kernel_size, addend, out):
        addend = None if addend is None else addend * 2
        launch(x, weight, grid, kernel_size, addend, out)

    monkeypatch.setattr(kernels, 'launch_conv', wrong_addend)
    x = torch.randn(1, 3, 9, 9, device=DEVICE)
    plain = PeripheralConv2d(3, 13, path='triton').to(DEVICE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('error')
        plain(x)
    biased = PeripheralConv2d(3, 13, bias=True, path='triton').to(DEVICE)
    falls_back(biased, x, 'disagree with the .fft. path', rel_err)


def failing_launch(monkeypatch, name, when=lambda *args, **meta: True):
    """Make the kernels' ``name`` raise as a failed launch does where
    ``when(*args, **meta)``."""
    kernels = triton_kernels()
    real = getattr(kernels, name)

    def launch(*args, **meta):
        if when(*args, **meta):
            raise RuntimeError('OutOfResources: out of resource: shared '
                               'memory, Required: 131072, Hardware limit: '
                               '101376')
        return real(*args, **meta)

    monkeypatch.setattr(kernels, name, launch)


def test_each_compiled_variant_is_checked_before_it_runs(
        monkeypatch, fresh_checks, rel_err):
    """Maps of other block sizes compile other kernels: the first call of
    each is checked (here a failure injected for strips wider than 16
    columns falls back with a warning instead of raising)."""
    conv = PeripheralConv2d(2, 31, path='triton').to(DEVICE)
    conv(torch.randn(1, 2, 9, 9, device=DEVICE))  # 16 columns: passes
    failing_launch(monkeypatch, '_launch',
                   lambda *args, **meta: meta['BLOCK_X'] > 16)
    x = torch.randn(1, 2, 20, 20, device=DEVICE)  # 32-column strips
    falls_back(conv, x, 'kernels failed .*OutOfResources', rel_err)


def test_a_later_failure_of_a_checked_variant_falls_back_once(
        monkeypatch, fresh_checks, rel_err):
    conv = PeripheralConv2d(2, 13, path='triton').to(DEVICE)
    x = torch.randn(1, 2, 9, 9, device=DEVICE)
    conv(x)  # checked, passes
    failing_launch(monkeypatch, '_launch')
    falls_back(conv, x, 'later forward .*OutOfResources', rel_err)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        conv(x)  # the trusted path serves that variant now, quietly


def test_a_backward_that_fails_to_launch_takes_the_fft_gradients(
        monkeypatch, fresh_checks, rel_err):
    conv = PeripheralConv2d(2, 13, path='triton').to(DEVICE)
    x = torch.randn(1, 2, 9, 9, device=DEVICE, requires_grad=True)
    conv(x).sum().backward()  # checked with gradients, passes
    conv.zero_grad()
    failing_launch(monkeypatch, '_weight_grad')
    out = conv(x)
    with pytest.warns(UserWarning, match='later backward .*OutOfResources'):
        grad_x, grad_w = torch.autograd.grad(out.sum(), (x, conv.weight))
    ref = conv.forward_reference(x)
    expected = torch.autograd.grad(ref.sum(), (x, conv.weight))
    assert rel_err(grad_x, expected[0].double()) < TOLERANCE
    assert rel_err(grad_w, expected[1].double()) < TOLERANCE


@pytest.mark.slow  # in Triton's interpreter, on the CPU
def test_long_streams_of_positive_inputs_stay_within_tolerance(rel_err):
    """A mean far from zero over many rows (the worst case of running sums
    down the columns) stays within the path's float32 tolerance (measured
    5e-6 output, 2e-5 input gradient, 5e-7 weight gradient: the rounding
    of the row prefix sums, as in 'box_sums')."""
    torch.manual_seed(0)
    grid = grid_tensor(sharing_grid(51))
    x = (torch.randn(1, 2, 400, 24, device=DEVICE) + 3).requires_grad_()
    weight = torch.randn(2, len(grid), len(grid), device=DEVICE)
    weight.requires_grad_()
    out = triton_kernels().grid_depthwise_conv_triton(x, weight, grid, 51)
    grad_out = torch.randn_like(out) + 3
    grads = torch.autograd.grad(out, (x, weight), grad_out)
    x64 = x.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    expected = dense_conv(x64, w64, grid.to(DEVICE), 51)
    expected_grads = torch.autograd.grad(expected, (x64, w64),
                                         grad_out.double())
    tolerance = triton.TritonPath.tolerance[torch.float32]
    assert rel_err(out, expected) < tolerance
    for grad, ref in zip(grads, expected_grads):
        assert rel_err(grad, ref) < tolerance


def test_block_sizes_follow_the_kernel_and_the_map():
    """A strip about as wide as K (16 to 128 columns, no wider than the
    map), a window of the next power of two that holds strip and halo."""
    blocks = triton_kernels().block_sizes
    assert blocks(56, 51, 13) == (64, 128, 16, 16)
    assert blocks(700, 13, 13) == (16, 32, 16, 16)
    assert blocks(7, 13, 13) == (16, 32, 16, 16)
    assert blocks(128, 101, 17) == (128, 256, 32, 32)
    assert blocks(128, 101, 17).num_warps == 8


def test_a_channel_slice_is_read_in_place(rel_err):
    """The kernels take strides: a slice of a mixer's channels (not
    contiguous) is read where it lies, and gives the conv of its copy."""
    torch.manual_seed(0)
    grid = grid_tensor(sharing_grid(13))
    whole = torch.randn(2, 8, 11, 10, device=DEVICE)
    x = whole[:, 2:5]
    assert not x.is_contiguous()
    weight = torch.randn(3, len(grid), len(grid), device=DEVICE)
    out = triton_kernels().triton_sat_conv(x, weight, grid.to(DEVICE), 13)
    expected = dense_conv(x.double(), weight.double(), grid.to(DEVICE), 13)
    assert rel_err(out, expected) < TOLERANCE


@pytest.mark.parametrize('per_pixel', [True, False])
def test_the_addend_is_added_in_the_kernel_with_its_gradient(
        per_pixel, rel_err):
    """A positional term (C, H, W) or a bias (C, 1, 1) is added by the
    forward's last step (one rounding), and its gradient is the output
    gradient summed over the axes it broadcasts over."""
    torch.manual_seed(0)
    b, c, h, w, k = 2, 3, 30, 11, 13  # taller than K: every step adds it
    grid = grid_tensor(sharing_grid(k))
    x = torch.randn(b, c, h, w, device=DEVICE, requires_grad=True)
    weight = torch.randn(
        c, len(grid), len(grid), device=DEVICE, requires_grad=True)
    shape = (c, h, w) if per_pixel else (c, 1, 1)
    addend = torch.randn(shape, device=DEVICE, requires_grad=True)
    out = triton_kernels().grid_depthwise_conv_triton(
        x, weight, grid, k, addend=addend)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, weight, addend), grad_out)

    inputs64 = [
        t.detach().double().requires_grad_() for t in (x, weight, addend)
    ]
    expected = dense_conv(inputs64[0], inputs64[1], grid.to(DEVICE), k) + \
        inputs64[2]
    expected_grads = torch.autograd.grad(expected, inputs64, grad_out.double())
    assert rel_err(out, expected) < TOLERANCE
    assert grads[2].shape == shape
    for grad, ref in zip(grads, expected_grads):
        assert rel_err(grad, ref) < TOLERANCE


def test_out_is_written_in_place_at_a_channel_offset(rel_err):
    """``out=`` (a channel slice of a larger map, as the deployed mixer
    passes) is written where it lies; the other channels stay as they
    were, and a gradient through it is refused."""
    torch.manual_seed(0)
    grid = grid_tensor(sharing_grid(13))
    x = torch.randn(2, 3, 10, 9, device=DEVICE)
    weight = torch.randn(3, len(grid), len(grid), device=DEVICE)
    addend = torch.randn(3, 1, 1, device=DEVICE)
    whole = torch.full((2, 8, 10, 9), 7., device=DEVICE)
    out = whole[:, 1:4]
    result = triton_kernels().grid_depthwise_conv_triton(
        x, weight, grid, 13, addend=addend, out=out)
    assert result.data_ptr() == out.data_ptr()
    expected = dense_conv(x.double(), weight.double(), grid.to(DEVICE),
                          13) + addend.double()
    assert rel_err(whole[:, 1:4], expected) < TOLERANCE
    assert (whole[:, :1] == 7).all() and (whole[:, 4:] == 7).all()
    with pytest.raises(RuntimeError, match='only where no gradient'):
        triton_kernels().grid_depthwise_conv_triton(
            x, weight.requires_grad_(), grid, 13, out=out)


def test_maps_shorter_than_the_warm_up_rows(rel_err):
    """Y[0] is mixed from the column sums of the first min(K - K // 2, H)
    rows: maps of 1 and 2 rows (fewer than that), a map of exactly that
    many, one more."""
    torch.manual_seed(0)
    grid = grid_tensor(sharing_grid(13))
    weight = torch.randn(2, len(grid), len(grid), device=DEVICE)
    for height in (1, 2, 7, 8):
        x = torch.randn(1, 2, height, 5, device=DEVICE)
        out = triton_kernels().grid_depthwise_conv_triton(x, weight, grid, 13)
        expected = dense_conv(x.double(), weight.double(), grid.to(DEVICE), 13)
        assert rel_err(out, expected) < TOLERANCE


@pytest.mark.slow  # in Triton's interpreter, on the CPU
def test_triton_ops_pass_torch_opcheck():
    """The custom ops' schemas, fake kernels, autograd registration and
    their use by AOT autograd, as torch checks them (here the interpreter's
    plain custom ops; on a GPU ``triton_op``, which tools/gpu/check.py
    compiles with inductor)."""
    kernels = triton_kernels()
    torch.manual_seed(0)
    grid = grid_tensor(sharing_grid(13)).to(DEVICE)
    x = torch.randn(2, 3, 9, 8, device=DEVICE, requires_grad=True)
    weight = torch.randn(
        3, len(grid), len(grid), device=DEVICE, requires_grad=True)
    torch.library.opcheck(kernels.triton_sat_conv, (x, weight, grid, 13))
    addend = torch.randn(3, 9, 8, device=DEVICE, requires_grad=True)
    torch.library.opcheck(kernels.triton_sat_conv,
                          (x, weight, grid, 13, addend))
    torch.library.opcheck(
        kernels.triton_sat_conv_weight_grad,
        (torch.randn_like(x.detach()), x.detach(), grid, 13),
        test_utils=('test_schema', 'test_faketensor'))


@pytest.mark.slow  # in Triton's interpreter, on the CPU
def test_triton_path_is_kept_by_torch_compile_and_export(
        kept_by_compile_and_export):
    """torch.compile traces the kernels as a custom op (one graph, forward
    and backward the same as eager, the gradients through the registered
    autograd); torch.export keeps it in the exported program."""
    torch.manual_seed(0)
    conv = PeripheralConv2d(3, 31, bias=True, path='triton').to(DEVICE)
    x = torch.randn(2, 3, 20, 24, device=DEVICE, requires_grad=True)
    kept_by_compile_and_export(conv, x, 'pelk_mm.triton_sat_conv.default')


def test_the_block_weight_gradient_has_no_second_derivative():
    """In a graph the gradients run through the registered autograd; the
    block weights' gradient says it cannot be differentiated again."""
    kernels = triton_kernels()
    grid = grid_tensor(sharing_grid(13)).to(DEVICE)
    x = torch.randn(1, 2, 9, 9, device=DEVICE)
    weight = torch.randn(
        2, len(grid), len(grid), device=DEVICE, requires_grad=True)
    out = kernels.triton_sat_conv(x, weight, grid, 13)
    grad_w, = torch.autograd.grad(
        out.square().sum(), weight, create_graph=True)
    with pytest.raises(RuntimeError, match='not differentiable'):
        grad_w.sum().backward()


def test_float64_is_computed_in_float32_with_a_warning(rel_err):
    grid = grid_tensor(sharing_grid(13))
    x = torch.randn(1, 2, 9, 9, device=DEVICE, dtype=torch.float64)
    weight = torch.randn(2, len(grid), len(grid), device=DEVICE).double()
    with pytest.warns(UserWarning, match='float64 inputs in float32'):
        out = triton_kernels().grid_depthwise_conv_triton(x, weight, grid, 13)
    assert out.dtype == torch.float64
    assert rel_err(out, dense_conv(x, weight, grid.to(DEVICE), 13)) < 1e-5


def test_cuda_choice_offers_the_kernels_unless_switched_off(monkeypatch):
    """On CUDA the kernels are priced with the other paths (which of them
    is cheapest where: test_dispatch.py), never on the CPU; PELK_MM_TRITON=0
    takes them out of the choice."""
    monkeypatch.setattr(triton_env, 'unavailable_on', lambda device_type: None)
    late_stage = paths.request_for(47, 14, 14, True, 13, 'cuda')
    assert 'triton' in paths.costs(late_stage)
    assert 'triton' not in paths.costs(late_stage._replace(device_type='cpu'))
    switches.set_triton_allowed(False)
    assert 'triton' not in paths.costs(late_stage)
    assert choose_path(47, 14, 14, True, 13, 'cuda') != 'triton'


def test_forcing_triton_where_it_cannot_run_is_refused(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '0')  # CPU maps: refused
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


@pytest.mark.gpu
def test_inductor_launches_the_kernels_and_cuda_graphs_capture_them(rel_err):
    """On a GPU the ops are ``triton_op``s: inductor compiles the graph
    around the kernels (no graph break), and ``reduce-overhead`` captures
    them in a CUDA graph; forward and gradients equal eager's."""
    torch.manual_seed(0)
    conv = PeripheralConv2d(8, 51, bias=True, path='triton').cuda()
    x = torch.randn(2, 8, 56, 56, device='cuda', requires_grad=True)
    eager = conv(x)
    eager_grads = torch.autograd.grad(eager.square().sum(), (x, conv.weight))
    for mode in ('default', 'reduce-overhead'):
        torch._dynamo.reset()
        compiled = torch.compile(conv, mode=mode, fullgraph=True)
        for _ in range(3):  # reduce-overhead records, then replays
            out = compiled(x)
            grads = torch.autograd.grad(out.square().sum(), (x, conv.weight))
        assert rel_err(out, eager) < 1e-5
        for got, want in zip(grads, eager_grads):
            assert rel_err(got, want) < 1e-4
