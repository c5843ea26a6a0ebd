"""The registry of paths and its dispatcher: what each declares, how
``auto`` chooses (eager and traced), what the switches force, and why a
named path is refused."""
import logging
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_custom_ops

from pelk_mm.ops import (PeripheralConv2d, choose_path, depthwise_conv,
                         forced_path, paths, peripheral_conv2d, switches)
from pelk_mm.ops.paths import triton_env


def test_every_path_declares_what_the_dispatcher_needs():
    assert paths.PATHS == ('auto', ) + tuple(paths.REGISTRY)
    for name, path in paths.REGISTRY.items():
        assert path.name == name and path.summary
        assert set(path.tolerance) >= {
            torch.float32, torch.float64, torch.float16, torch.bfloat16
        }
        if path.stand_in is not None:
            assert paths.get(path.stand_in).traceable
        if path.checked_against is not None:
            assert not paths.get(path.checked_against).checked_against
    with pytest.raises(ValueError, match='path must be one of'):
        paths.get('winograd')


def test_dense_kernel_paths_match_the_dense_conv(dense_path, rel_err):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 17, 20, dtype=torch.float64)
    kernel = torch.randn(3, 31, 31, dtype=torch.float64)
    expected = F.conv2d(x, kernel[:, None], padding=15, groups=3)
    assert rel_err(depthwise_conv(x, kernel, dense_path), expected) < 1e-10


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
    # Training too, with the register-blocked backward: at K = 51 and 101
    # on 128x128 it measured 18 and 26 ms against FFT's 25 and 34.
    assert choose_path(51, 128, 128, True, num_cells=13) == 'sat'
    assert choose_path(101, 128, 128, True, num_cells=17) == 'sat'
    # Small kernels in inference on small maps (PeLK-T's last stage at 224,
    # whose rows the extension pads to 16 columns): oneDNN's direct conv
    # (measured 0.5 ms against 1.0); on large ones the two tie (3.8 and
    # 3.4 ms at 128x128).
    assert choose_path(13, 7, 7, num_cells=9) == 'direct'


def test_cuda_choice_uses_its_own_constants():
    """On CUDA: never the CPU extension; the direct conv for small kernels
    in inference, FFT for large ones (the reasoned default). Without the
    Triton kernels (PELK_MM_TRITON=0; their choice: test_triton.py)."""
    switches.set_triton_allowed(False)
    assert any(
        path.costs.get('cuda') != path.costs.get('cpu')
        for path in paths.REGISTRY.values())
    assert choose_path(5, 128, 128, device='cuda') == 'direct'
    assert choose_path(13, 14, 14, num_cells=9, device='cuda') == 'direct'
    for k, cells in ((51, 13), (101, 17)):
        for size in (14, 56, 128):
            assert choose_path(k, size, size, True, cells, 'cuda') == 'fft'
    # An FFT unit weighs more on CUDA: a small training kernel that the CPU
    # runs through FFT stays direct there.
    assert choose_path(7, 32, 32, True) == 'fft'
    assert choose_path(7, 32, 32, True, device='cuda') == 'direct'


@needs_custom_ops
def test_auto_prices_only_traceable_paths_in_traced_graphs():
    """In an ONNX export or a TorchScript trace (``traced=True``) the fused
    extension cannot run: ``auto`` prices the standard-op paths, at their
    measured CPU costs (``box_sums``, the extension's standard-op form, is
    7-17x slower than FFT there). ``torch.compile`` and ``torch.export``
    keep the extension's custom ops, so there ``auto`` chooses as in eager
    mode."""
    assert choose_path(51, 64, 64, True, 13) == 'sat'
    assert choose_path(51, 64, 64, True, 13, traced=True) == 'fft'
    assert choose_path(51, 64, 64, True, 13, traced='standard') == 'fft'
    assert choose_path(51, 64, 64, True, 13, traced='compile') == 'sat'
    request = paths.Request(51, 64, 64, num_cells=13)
    priced = paths.costs(request)
    assert priced['fft'] < priced['box_sums'] < priced['direct']
    assert choose_path(5, 128, 128, traced=True) == 'direct'
    # A trace never gets a path that is opaque to it.
    for k, cells in ((13, 9), (51, 13), (101, 17)):
        for size in (8, 56, 128):
            for grad in (False, True):
                chosen = choose_path(k, size, size, grad, cells, traced=True)
                assert paths.get(chosen).traceable
                chosen = choose_path(k, size, size, grad, cells, 'cpu',
                                     'compile')
                assert paths.get(chosen).traceable or \
                    paths.get(chosen).custom_op
                assert chosen == choose_path(k, size, size, grad, cells)
    with pytest.raises(ValueError, match='traced must be a bool or one of'):
        choose_path(51, 64, 64, traced='dynamo')


def test_pelk_mm_path_overrides_the_choice(grid_path):
    with forced_path(grid_path):
        assert choose_path(51, 64, 64, num_cells=13) == grid_path
        assert choose_path(3, 8, 8, True, 5) == grid_path
        conv = PeripheralConv2d(2, 13)
        x = torch.randn(1, 2, 12, 12)
        with torch.no_grad():
            assert torch.allclose(
                conv(x), conv.forward_reference(x), atol=1e-5)
    assert switches.get_forced_path() == 'auto'  # restored on leaving


@needs_custom_ops
def test_a_forced_path_stands_in_where_it_covers_the_reason():
    """'sat' is the fused extension on the CPU; where it cannot run (a
    traced graph, another device) its standard-op form computes the same.
    'triton' stands in for tracing only: on a device it cannot use, the
    request is refused."""
    with forced_path('sat'):
        assert choose_path(51, 64, 64, num_cells=13) == 'sat'
        assert choose_path(51, 64, 64, num_cells=13, traced=True) == \
            'box_sums'
        assert choose_path(51, 64, 64, num_cells=13, traced='compile') == \
            'sat'
        assert choose_path(51, 64, 64, num_cells=13, device='cuda') == \
            'box_sums'
    with forced_path('triton'):
        assert choose_path(
            51, 64, 64, num_cells=13, device='cuda', traced=True) == \
            'box_sums'


def test_pelk_mm_path_refusals():
    switches.set_forced_path('sat')
    with pytest.raises(ValueError, match='block weights on a grid'):
        choose_path(51, 64, 64)
    switches.set_forced_path('fast')
    with pytest.raises(ValueError, match="PELK_MM_PATH must be one of"):
        choose_path(51, 64, 64)


@needs_custom_ops
def test_refusals_say_why_and_what_can_run(monkeypatch):
    """A named path that cannot run says why, and which paths can; the
    error is a ValueError (a bad setting) and a RuntimeError (of this
    machine) alike."""
    request = paths.Request(51, 64, 64, num_cells=None)
    refused = paths.refusals(request)
    assert refused['direct'] is None and refused['fft'] is None
    assert refused['box_sums'].kind == 'grid'
    with pytest.raises(paths.PathRefused) as error:
        paths.resolve('box_sums', request)
    assert isinstance(error.value, ValueError)
    assert isinstance(error.value, RuntimeError)
    assert "path='box_sums' cannot run here" in str(error.value)
    assert 'paths that can: direct, fft' in str(error.value)
    traced = paths.Request(51, 64, 64, num_cells=13, tracer='standard')
    refusal = paths.refusals(traced)['sat']
    assert refusal.kind == 'traced'
    assert 'ONNX export and the TorchScript tracer' in refusal.reason
    compiled = traced._replace(tracer='compile')
    assert paths.refusals(compiled)['sat'] is None
    # The Triton kernels are custom ops too (where they can run at all).
    monkeypatch.setattr(triton_env, 'unavailable_on', lambda device_type: None)
    assert paths.refusals(traced)['triton'].kind == 'traced'
    assert paths.refusals(compiled)['triton'] is None


def test_auto_logs_why_each_path_refused(caplog):
    with caplog.at_level(logging.DEBUG, logger='pelk_mm.ops.paths'):
        depthwise_conv(torch.randn(1, 2, 12, 12), torch.randn(2, 13, 13))
    message = caplog.records[-1].getMessage()
    assert message.startswith("auto chose 'direct'")
    assert "'direct': '1.42e+03'" in message  # the costs it compared
    # and the paths it did not, with their reasons
    assert "'sat': \"the 'sat' path works from the block weights" in message


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


def test_auto_dispatches_by_grad_mode(monkeypatch):
    from pelk_mm.ops.paths import direct, fft, sat
    calls = []
    for module, name in ((direct, 'depthwise_conv_direct'),
                         (fft, 'depthwise_conv_fft'),
                         (sat, 'grid_depthwise_conv_sat')):
        original = getattr(module, name)
        monkeypatch.setattr(
            module,
            name,
            lambda *args, _name=name, _f=original: calls.append(_name) or _f(
                *args))
    conv = PeripheralConv2d(4, 13)
    x = torch.randn(1, 4, 7, 7)
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
