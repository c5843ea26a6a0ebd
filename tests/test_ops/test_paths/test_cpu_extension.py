"""``'sat'``: the fused C++/OpenMP extension, its build and its
backward."""
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_custom_ops

from pelk_mm.ops import PeripheralConv2d, choose_path, paths, switches
from pelk_mm.ops.grid import expand_by_grid
from pelk_mm.ops.paths import cpu_extension


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
    torch.library.opcheck(cpu_extension.sat_conv, (x, weight, grid))
    grad_out = torch.randn_like(x.detach())
    torch.library.opcheck(
        cpu_extension.sat_conv_weight_grad,
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
    expected = (cpu_extension.sat_conv(x.contiguous(), weight, grid),
                cpu_extension.sat_conv_weight_grad(grad_out.contiguous(),
                                                   x.contiguous(), weight,
                                                   grid))
    got = (cpu_extension.sat_conv(x, weight, grid),
           cpu_extension.sat_conv_weight_grad(grad_out, x, weight, grid))
    for out, want in zip(got, expected):
        assert torch.equal(out, want)
    assert _copies(lambda: cpu_extension.sat_conv(x, weight, grid)) == 0
    assert _copies(lambda: cpu_extension.sat_conv_weight_grad(
        grad_out, x, weight, grid)) == 0
    # What is not row-major per plane is copied once.
    column_major = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert _copies(
        lambda: cpu_extension.sat_conv(column_major, weight, grid)) == 1


def test_sat_second_derivatives(rel_err):
    """The input gradient is the conv with the flipped kernel, so it is
    differentiable again (checked against the dense conv's second
    derivative); the gradient of the block weights is not, and says so
    instead of silently giving zeros."""
    x, weight, grid = _small_case()

    def second_derivatives(out):
        grad_x, = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), (x, weight))

    ours = second_derivatives(
        cpu_extension.grid_depthwise_conv_sat(x, weight, grid))
    reference = second_derivatives(
        F.conv2d(
            x, expand_by_grid(weight, grid)[:, None], padding=4, groups=3))
    for got, want in zip(ours, reference):
        assert rel_err(got, want) < 1e-12
    out = cpu_extension.grid_depthwise_conv_sat(x, weight, grid)
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
    with open(cpu_extension._SOURCE) as f:
        (tile, ) = re.findall(r'constexpr int64_t kTile = (\d+);', f.read())
    assert cpu_extension.COLUMN_TILE == int(tile)
    path = cpu_extension.FusedCPUPath()
    narrow = paths.Request(13, 7, 7, num_cells=9)
    assert path.cost(narrow) == path.cost(narrow._replace(width=16))


def test_sat_extension_builds_per_cpu(monkeypatch, tmp_path):
    """Compiled with -march=native: a home folder shared by two kinds of
    CPU gives each its own build."""
    sat = cpu_extension
    switches.set_extension_dir(str(tmp_path))
    here = sat.build_directory()
    assert here == sat.build_directory()
    assert sat.cpu_identity()
    monkeypatch.setattr(sat, 'cpu_identity', lambda: 'another CPU')
    assert sat.build_directory() != here


def test_asking_for_a_cost_never_builds_the_extension(monkeypatch, tmp_path):
    sat = cpu_extension

    def build(*args, **kwargs):
        raise AssertionError('choose_path started a build')

    monkeypatch.setattr(sat, 'load', build)
    assert sat.is_built()  # built by make install: offered
    assert choose_path(51, 64, 64, True, num_cells=13) == 'sat'
    monkeypatch.setattr(sat, '_module', None)
    switches.set_extension_dir(str(tmp_path))  # nothing built
    assert not sat.is_built()
    assert choose_path(51, 64, 64, True, num_cells=13) != 'sat'
    assert not list(tmp_path.rglob('*.so'))


def test_sat_extension_load_survives_a_killed_build(tmp_path):
    """A build killed half-way leaves torch's ``lock`` file behind; the next
    load must clear it instead of waiting for it forever."""
    sat = cpu_extension
    sat.load()  # built (cached) in this installation's folder
    built = sat.build_directory()
    cached = tmp_path / osp.basename(built)
    shutil.copytree(built, cached)  # mtimes kept: nothing to rebuild
    (cached / 'lock').touch()  # the baton of a build that never finished
    run = subprocess.run([
        sys.executable, '-c', 'from pelk_mm.ops.paths import cpu_extension; '
        'cpu_extension.load()'
    ],
                         env=dict(os.environ, PELK_MM_EXT_DIR=str(tmp_path)),
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    if sat.torch_locks_builds():  # the file is no baton to clear
        assert 'killed' not in run.stderr
        return
    assert 'left by an extension build that was killed' in run.stderr
    assert not (cached / 'lock').exists()


def test_a_damaged_library_is_passed_by_then_rebuilt(tmp_path, monkeypatch):
    """A library damaged on disk after its build (its second half zeroed,
    its time kept, so ninja sees nothing to do) is never loaded. In a
    process of its own (loading it could kill that process): 'auto' takes
    another path and trains, saying once why and how to rebuild. Then
    :func:`load` removes it and its object file before building anew, and
    records the new library's checksum (the build itself stubbed here)."""
    sat = cpu_extension
    sat.load()  # built (cached), its checksum recorded
    built = sat.build_directory()
    cached = tmp_path / osp.basename(built)
    shutil.copytree(built, cached)
    library = cached / 'pelk_peripheral_sat.so'
    data = bytearray(library.read_bytes())
    half = len(data) // 2
    data[half:] = bytes(len(data) - half)
    times = library.stat()
    library.write_bytes(bytes(data))
    os.utime(library, ns=(times.st_atime_ns, times.st_mtime_ns))
    run = subprocess.run([
        sys.executable, '-c', 'import torch\n'
        'from pelk_mm.ops import PeripheralConv2d, choose_path\n'
        'print(choose_path(51, 64, 64, True, num_cells=13))\n'
        'conv = PeripheralConv2d(4, 51)\n'
        'conv(torch.randn(1, 4, 64, 64)).sum().backward()\n'
        'conv(torch.randn(1, 4, 64, 64)).sum().backward()\n'
    ],
                         env=dict(os.environ, PELK_MM_EXT_DIR=str(tmp_path)),
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ['fft'], run.stdout
    assert run.stderr.count(f'built in {library}, but it does not match the '
                            'checksum recorded by its build') == 1, run.stderr
    assert sat.BUILD_COMMAND in run.stderr

    from torch.utils import cpp_extension as torch_extension

    def build(build_directory, **kwargs):
        left = set(os.listdir(build_directory))
        assert not left & {
            library.name, f'{library.name}.sha256', 'peripheral_sat.o'
        }, left
        (cached / 'pelk_peripheral_sat.so').write_bytes(b'rebuilt')
        return 'module'

    monkeypatch.setattr(torch_extension, 'load', build)
    monkeypatch.setattr(sat, '_module', None)
    monkeypatch.setattr(sat, '_error', None)
    switches.set_extension_dir(str(tmp_path))
    with pytest.warns(UserWarning, match='does not match the checksum'):
        assert sat.load() == 'module'
    assert (cached / 'pelk_peripheral_sat.so.sha256').read_text().strip() \
        == sat.hashlib.sha256(b'rebuilt').hexdigest()
