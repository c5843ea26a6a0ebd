"""Fixtures shared by the test modules (none imports another)."""
import logging
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner

from pelk_mm.models import PeLK
from pelk_mm.ops import paths

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Where no GPU is, the Triton kernels (path='triton') run through Triton's
# interpreter on CPU tensors; it is chosen when triton is first imported,
# which none of the imports above does.
if not torch.cuda.is_available():
    assert 'triton' not in sys.modules, 'set TRITON_INTERPRET before triton'
    os.environ.setdefault('TRITON_INTERPRET', '1')


def native_paths(device_type: str) -> list:
    """The registered paths that run natively on ``device_type`` (an
    emulated one, the Triton kernels in Triton's CPU interpreter, has tests
    of its own at small sizes): a new path joins every test parametrized
    by them."""
    request = paths.Request(51, 32, 32, num_cells=13, device_type=device_type)
    return [
        name for name, path in paths.REGISTRY.items()
        if path.refusal(request) is None and not path.emulated(request)
    ]


GRID_PATHS = native_paths('cpu')
DENSE_PATHS = [name for name in GRID_PATHS if not paths.get(name).needs_grid]
TRACEABLE_PATHS = [name for name in GRID_PATHS if paths.get(name).traceable]
PATH_FIXTURES = {
    'grid_path': GRID_PATHS,  # conv of block weights on a grid
    'any_path': ['auto'] + GRID_PATHS,
    'dense_path': DENSE_PATHS,  # conv of a dense kernel
    'traceable_path': TRACEABLE_PATHS,  # what traced graphs may hold
    'cuda_path': ['auto'] + native_paths('cuda'),  # gpu-marked tests
}


def pytest_generate_tests(metafunc):
    """Parametrize the path fixtures of :data:`PATH_FIXTURES` by the
    registry."""
    for name, values in PATH_FIXTURES.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values)


def paper_models(task: str) -> list:
    """The models of ``configs/metafiles/<task>.yml`` (the one copy of the
    paper's numbers), each as its metafile entry plus ``arch`` (its
    backbone's, read from its config)."""
    import yaml
    with open(osp.join(REPO, 'configs', 'metafiles', f'{task}.yml')) as f:
        models = yaml.safe_load(f)['Models']
    for model in models:
        config = Config.fromfile(osp.join(REPO, model['Config']))
        model['arch'] = config.model.backbone.arch
    return models


def paper_counts(task: str, name: str) -> tuple:
    """(params, FLOPs) of model ``name`` in the ``task`` metafile."""
    (model, ) = [m for m in paper_models(task) if m['Name'] == name]
    return model['Metadata']['Parameters'], model['Metadata']['FLOPs']


def relative_error(actual, expected) -> float:
    """Largest absolute difference over the largest absolute expected value
    (in float64)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return ((actual - expected).abs().max() /
            expected.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope='session')
def rel_err():
    """``rel_err(actual, expected)``: :func:`relative_error`."""
    return relative_error


def _kept_by_compile_and_export(conv: nn.Module, x: torch.Tensor,
                                op: str) -> None:
    """Assert that ``conv`` compiles (fullgraph, AOT autograd without
    inductor) into one graph holding the custom op ``op`` (e.g.
    ``'pelk_mm.sat_conv.default'``), with eager's output and gradients,
    and that ``torch.export`` keeps it too."""
    from torch._dynamo.backends.debugging import aot_eager
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return aot_eager(graph_module, example_inputs)

    eager = conv(x)
    eager_grads = torch.autograd.grad(eager.square().sum(), (x, conv.weight))
    torch._dynamo.reset()
    out = torch.compile(conv, backend=backend, fullgraph=True)(x)
    assert len(graphs) == 1
    assert op in {str(node.target) for node in graphs[0].graph.nodes}
    assert relative_error(out, eager) < 1e-6
    grads = torch.autograd.grad(out.square().sum(), (x, conv.weight))
    for got, want in zip(grads, eager_grads):
        assert relative_error(got, want) < 1e-5
    with torch.no_grad():
        program = torch.export.export(conv.eval(), (x.detach(), ))
    assert op in {str(node.target) for node in program.graph.nodes}
    assert relative_error(program.module()(x.detach()), eager) < 1e-6


@pytest.fixture(scope='session')
def kept_by_compile_and_export():
    """``kept_by_compile_and_export(conv, x, op)``:
    :func:`_kept_by_compile_and_export`."""
    return _kept_by_compile_and_export


@pytest.fixture(autouse=True)
def restore_switches():
    """Every test starts with the process's switches and leaves them so
    (tests change them through their setters)."""
    from pelk_mm.ops import switches
    saved = (switches.get_forced_path(), switches.triton_allowed(),
             switches.get_extension_dir())
    yield
    switches.set_forced_path(saved[0])
    switches.set_triton_allowed(saved[1])
    switches.set_extension_dir(saved[2])


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped, saying so, without it."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (none visible)')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def mmlogger_records():
    """Records of what goes through mmengine's current logger."""
    records = []

    class Collect(logging.Handler):

        def emit(self, record):
            records.append(record)

    logger = MMLogger.get_current_instance()
    handler = Collect(level=logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture
def free_port():
    """A TCP port on the loopback that nothing listens on now (for the
    rendezvous of multi-process tests; a fixed one fails wherever it is
    taken, e.g. by a second test run on the same machine)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='session')
def run_tool():
    """``run_tool(*args, timeout=900, check=True, cwd=REPO)``: run
    ``python *args`` as a user would, from the repository root; with
    ``check``, a failure shows the ends of its output."""

    def run(*args, timeout=900, check=True, cwd=REPO):
        proc = subprocess.run([sys.executable, *args],
                              cwd=cwd,
                              timeout=timeout,
                              capture_output=True,
                              text=True,
                              env=dict(os.environ, PYTHONPATH=REPO))
        if check and proc.returncode != 0:
            raise AssertionError(f'{args} failed:\n{proc.stdout[-3000:]}\n'
                                 f'{proc.stderr[-3000:]}')
        return proc

    return run


@pytest.fixture(scope='session')
def photo():
    """A real photo (matplotlib ships it; 512x600, RGB)."""
    from matplotlib.cbook import get_sample_data
    return str(get_sample_data('grace_hopper.jpg', asfileobj=False))


@pytest.fixture(scope='session')
def load_config():
    """``load_config(name)``: a config of ``configs/`` (or a full path)."""
    return lambda name: Config.fromfile(osp.join(REPO, 'configs', name))


TOY_ARCH = dict(
    depths=[1, 1, 1, 1],
    channels=[16, 24, 32, 40],
    kernel_sizes=[13, 11, 9, 7])


class ToyClassifier(BaseModel):
    """A two-class classifier on a one-block-per-stage PeLK."""

    def __init__(self, drop_path_rate=0.):
        super().__init__()
        self.backbone = PeLK(TOY_ARCH, drop_path_rate=drop_path_rate)
        self.head = nn.Linear(40, 2)

    def forward(self, inputs, labels, mode='tensor'):
        logits = self.head(self.backbone(inputs)[-1])
        if mode == 'loss':
            return {'loss': nn.functional.cross_entropy(logits, labels)}
        return logits


class ToyDataset(torch.utils.data.Dataset):
    """Eight fixed random 32x32 images, two classes."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return dict(
            inputs=torch.randn(3, 32, 32, generator=generator),
            labels=torch.tensor(index % 2))


@pytest.fixture
def make_runner():
    """``make_runner(work_dir, max_iters, resume=False, checkpoint=None,
    drop_path_rate=0., **runner_kwargs)``: an mmengine Runner training
    :class:`ToyClassifier` (built inside, after the caller's seeding) on
    :class:`ToyDataset`, seeded, checkpointing every 2 iterations unless
    ``checkpoint`` gives another hook config."""

    def make(work_dir,
             max_iters,
             resume=False,
             checkpoint=None,
             drop_path_rate=0.,
             **kwargs):
        return Runner(
            model=ToyClassifier(drop_path_rate),
            work_dir=str(work_dir),
            train_dataloader=dict(
                dataset=ToyDataset(),
                batch_size=4,
                num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=True),
                collate_fn=dict(type='default_collate')),
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
            train_cfg=dict(by_epoch=False, max_iters=max_iters),
            default_hooks=dict(
                checkpoint=checkpoint
                or dict(type='CheckpointHook', interval=2, by_epoch=False),
                logger=dict(type='LoggerHook', interval=1)),
            randomness=dict(seed=0),
            resume=resume,
            default_scope='mmengine',
            **kwargs)

    return make
