"""Building the C++ extension: one folder per installation and CPU, never
from a cost question, through a killed build and a damaged library."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest

from pelk_mm.ops import choose_path, paths, switches
from pelk_mm.ops.csrc import build


def test_sat_extension_builds_per_cpu(monkeypatch, tmp_path):
    """Compiled with -march=native: a home folder shared by two kinds of
    CPU gives each its own build."""
    switches.set_extension_dir(str(tmp_path))
    here = build.build_directory()
    assert here == build.build_directory()
    assert build.cpu_identity()
    monkeypatch.setattr(build, 'cpu_identity', lambda: 'another CPU')
    assert build.build_directory() != here


def test_asking_for_a_cost_never_builds_the_extension(monkeypatch, tmp_path):
    build.load()  # built (by make install, or here): offered

    def started(*args, **kwargs):
        raise AssertionError('choose_path started a build')

    monkeypatch.setattr(build, 'load', started)
    assert build.is_built()
    request = paths.request_for(51, 64, 64, True, num_cells=13)
    assert 'sat' in paths.costs(request)
    monkeypatch.setattr(build, '_module', None)
    switches.set_extension_dir(str(tmp_path))  # nothing built
    assert not build.is_built()
    assert 'sat' not in paths.costs(request)
    assert choose_path(51, 64, 64, True, num_cells=13) != 'sat'
    assert not list(tmp_path.rglob('*.so'))


def test_sat_extension_load_survives_a_killed_build(tmp_path):
    """A build killed half-way leaves torch's ``lock`` file behind; the next
    load must clear it instead of waiting for it forever."""
    build.load()  # built (cached) in this installation's folder
    built = build.build_directory()
    cached = tmp_path / osp.basename(built)
    shutil.copytree(built, cached)  # mtimes kept: nothing to rebuild
    (cached / 'lock').touch()  # the baton of a build that never finished
    run = subprocess.run([
        sys.executable, '-c',
        'from pelk_mm.ops.csrc import build; build.load()'
    ],
                         env=dict(os.environ, PELK_MM_EXT_DIR=str(tmp_path)),
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    if build.torch_locks_builds():  # the file is no baton to clear
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
    build.load()  # built (cached), its checksum recorded
    built = build.build_directory()
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
    assert build.BUILD_COMMAND in run.stderr

    from torch.utils import cpp_extension as torch_extension

    def fake_build(build_directory, **kwargs):
        left = set(os.listdir(build_directory))
        assert not left & {
            library.name, f'{library.name}.sha256', 'peripheral_sat.o'
        }, left
        (cached / 'pelk_peripheral_sat.so').write_bytes(b'rebuilt')
        return 'module'

    monkeypatch.setattr(torch_extension, 'load', fake_build)
    monkeypatch.setattr(build, '_module', None)
    monkeypatch.setattr(build, '_error', None)
    switches.set_extension_dir(str(tmp_path))
    with pytest.warns(UserWarning, match='does not match the checksum'):
        assert build.load() == 'module'
    assert (cached / 'pelk_peripheral_sat.so.sha256').read_text().strip() \
        == build.hashlib.sha256(b'rebuilt').hexdigest()
