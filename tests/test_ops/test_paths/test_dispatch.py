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


def cheapest_by_declared_formulas(request: paths.Request) -> str:
    """What ``auto`` must take for ``request``: of the registered paths
    that serve it (no refusal, ready, a constant on its device), the one
    whose constant times formula is least, ties to the first registered."""
    best = None
    for name, path in paths.REGISTRY.items():
        unit = path.unit(request.device_type)
        if unit is None or path.refusal(request) is not None or \
                not path.ready(request):
            continue
        cost = unit * path.work(request)
        if best is None or cost < best[0]:
            best = (cost, name)
    assert best is not None, f'no path serves {request}'
    return best[1]


# Kernels with and without a grid (PeLK's K and k'), the map sizes of its
# stages, both grad modes, both device types, eager and each tracer.
REQUESTS = [
    paths.request_for(k, size, size, grad, cells, device, traced=traced)
    for k, cells in ((3, None), (5, 5), (7, None), (13, 9), (31, 11), (51, 13),
                     (101, 17), (151, 19)) for size in (7, 16, 56, 128)
    for grad in (False, True) for device in ('cpu', 'cuda')
    for traced in (False, True, 'compile')
]


@pytest.mark.parametrize('triton', [True, False], ids=['triton', 'no-triton'])
def test_auto_takes_the_cheapest_path_that_serves_each_conv(
        monkeypatch, triton):
    """Whatever the constants and whichever paths are registered: ``auto``
    takes a path that serves the conv, the cheapest by the paths' own
    formulas and constants (with the Triton kernels offered on CUDA, and
    with PELK_MM_TRITON=0)."""
    monkeypatch.setattr(triton_env, 'unavailable_on', lambda device: None)
    switches.set_triton_allowed(triton)
    chosen = set()
    for request in REQUESTS:
        path = paths.choose(request)
        assert paths.get(path).refusal(request) is None, (path, request)
        assert path == cheapest_by_declared_formulas(request), request
        chosen.add(path)
    # Each path that some conv here is cheapest on is reached.
    assert len(chosen) >= 3 and ('triton' in chosen) == triton


@needs_custom_ops
def test_auto_prices_only_traceable_paths_in_traced_graphs():
    """In an ONNX export or a TorchScript trace (``traced=True``) the fused
    extension cannot run: ``auto`` takes a path of standard ops.
    ``torch.compile`` and ``torch.export`` keep the extension's custom ops,
    so there ``auto`` chooses as in eager mode."""
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
        conv(x)  # inference: priced without a backward
    conv(x)  # training
    conv.path = 'direct'
    conv(x)
    conv.path = 'fft'
    conv(x)
    called = {
        'direct': 'depthwise_conv_direct',
        'fft': 'depthwise_conv_fft',
        'sat': 'grid_depthwise_conv_sat'
    }
    assert calls == [
        called[choose_path(13, 7, 7, False,
                           9)], called[choose_path(13, 7, 7, True, 9)],
        'depthwise_conv_direct', 'depthwise_conv_fft'
    ]
