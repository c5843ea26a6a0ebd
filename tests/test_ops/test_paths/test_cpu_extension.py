"""``'sat'``: the fused C++/OpenMP extension, its build and its
backward."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

from pelk_mm.ops import choose_path, switches
from pelk_mm.ops.paths import cpu_extension


def test_sat_path_refuses_a_second_derivative():
    """Its C++ backward builds no graph: differentiating the gradient again
    must raise, not silently give zeros."""
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)
    grid = torch.tensor([2, 1, 3, 1, 2])
    out = cpu_extension.grid_depthwise_conv_sat(x, weight, grid)
    grad_x, = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable'):
        grad_x.sum().backward()


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
    assert 'left by an extension build that was killed' in run.stderr
    assert not (cached / 'lock').exists()
