"""``'box_sums'``: the summed-area tables in standard ops, and what
traced graphs run for the summed-area paths."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import CPU_HALF_AUTOCAST

from pelk_mm.deployment import OPSET, TORCHSCRIPT_OPSET
from pelk_mm.ops import (PeripheralConv2d, expand_by_grid,
                         grid_depthwise_conv_box_sums, peripheral_conv2d,
                         sharing_grid)
from pelk_mm.ops.grid import grid_tensor
from pelk_mm.ops.paths import triton_env
from pelk_mm.ops.torch_features import has

# Float32 tolerance of every path, relative to the largest reference value.
FLOAT32_TOLERANCE = 1e-4
SHAPES = [(2, 3, 20, 17, 13), (1, 4, 9, 12, 31), (2, 2, 33, 32, 51),
          (3, 5, 8, 7, 51), (1, 2, 64, 40, 101), (2, 3, 5, 5, 5)]


@pytest.mark.parametrize('shape', SHAPES)
def test_box_sums_in_standard_ops_match_the_dense_conv(shape, rel_err):
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


def test_sat_path_runs_box_sums_where_the_graph_is_traced(
        monkeypatch, rel_err):
    """The fused extension is opaque to tracers: a traced 'sat' conv
    records the standard-op form, and the trace computes the same."""
    from pelk_mm.ops.paths import sat
    torch.manual_seed(0)
    conv = PeripheralConv2d(3, 31, bias=True, path='sat')
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


def test_sat_path_exports_to_onnx_as_box_sums(tmp_path, rel_err):
    """ONNX export (either exporter) cannot hold the
    extension's custom op: a 'sat' conv exports its standard-op form, and
    onnxruntime computes the same."""
    onnx = pytest.importorskip('onnx')
    onnxruntime = pytest.importorskip('onnxruntime')
    torch.manual_seed(0)
    conv = PeripheralConv2d(3, 31, bias=True, path='sat').eval()
    x = torch.randn(1, 3, 20, 24)
    file = str(tmp_path / 'sat.onnx')
    with torch.no_grad():
        eager = conv(x)
        # torch's dynamo exporter, or before torch 2.5 the TorchScript one.
        exporter = dict(
            dynamo=True, opset_version=OPSET) if has('dynamo_onnx') else dict(
                opset_version=TORCHSCRIPT_OPSET)
        torch.onnx.export(conv, (x, ), file, verbose=False, **exporter)
    ops = {node.op_type for node in onnx.load(file).graph.node}
    assert 'CumSum' in ops and 'MatMul' in ops
    session = onnxruntime.InferenceSession(
        file, providers=['CPUExecutionProvider'])
    (out, ) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert rel_err(torch.from_numpy(out), eager) < FLOAT32_TOLERANCE


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('path, size', [('box_sums', 128), ('sat', 128),
                                        ('triton', 24)])
def test_summed_area_paths_keep_float32_under_autocast(path, size, dtype,
                                                       rel_err):
    """Autocast puts matmuls on its low-precision list; the mix of prefix
    sums must not follow it (it gave 1e-2 in fp16 and 9e-2 in bf16 of the
    largest output at K = 51, 128x128, input mean 1). Within 5e-3, forward
    and the gradients, on the CPU's autocast (the Triton kernels through
    the interpreter, at a small size)."""
    if dtype == torch.float16 and not CPU_HALF_AUTOCAST:
        pytest.skip("this torch's CPU autocast has no float16")
    if path == 'triton' and not triton_env.TRITON_OPS:
        pytest.skip("the 'triton' path needs torch >= 2.6")
    torch.manual_seed(0)
    grid = grid_tensor(sharing_grid(51))
    x = (torch.randn(1, 4, size, size) + 1).requires_grad_()
    weight = (torch.randn(4, len(grid), len(grid)) / 51).requires_grad_()
    x64, w64 = (t.detach().double().requires_grad_() for t in (x, weight))
    dense = F.conv2d(
        x64, expand_by_grid(w64, grid)[:, None], padding=25, groups=4)
    grad_out = torch.randn_like(dense)
    expected = torch.autograd.grad(dense, (x64, w64), grad_out)
    # No warning: the path itself served, not the first-use check's FFT
    # (whose check of the gradients runs inside the autocast region).
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with torch.autocast('cpu', dtype=dtype):
            out = peripheral_conv2d(x, weight, path=path, grid=grid)
        grads = torch.autograd.grad(out, (x, weight), grad_out.to(out.dtype))
    assert out.dtype == torch.float32
    assert rel_err(out, dense) < 5e-3
    for grad, ref_grad in zip(grads, expected):
        assert rel_err(grad, ref_grad) < 5e-3
