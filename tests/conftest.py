"""Fixtures shared by the test modules (none imports another)."""
import importlib.metadata
import importlib.util
import io
import logging
import os
import os.path as osp
import runpy
import socket
import subprocess
import sys
import time
import traceback
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import NamedTuple, Optional

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner

from pelk_mm.models import PeLK
from pelk_mm.ops import paths, torch_features
from pelk_mm.ops.paths import relative_error
from pelk_mm.runtime import safe_loading
from pelk_mm.synthetic import generate_ade20k, generate_coco, generate_imagenet

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: Graphs (torch.compile, torch.export) that hold pelk_mm's custom ops and
#: trace its dispatcher: torch >= 2.4 (pelk_mm.ops.torch_features).
needs_custom_ops = pytest.mark.skipif(
    not torch_features.has('custom_ops'),
    reason='torch < 2.4: no custom ops in graphs, and its dynamo does not '
    "trace pelk_mm's dispatcher")

#: mmdet, mmseg and mmpretrain models need mmcv's compiled ops, which do not
#: build on every torch (README, "Tested versions").
needs_mmcv_ops = pytest.mark.skipif(
    importlib.util.find_spec('mmcv._ext') is None,
    reason="mmcv without its compiled ops (mmcv-lite): no OpenMMLab models")


def _cpu_supports(call) -> bool:
    """Whether this torch's CPU kernels take ``call`` without an error or
    a warning (float16 convs and autocast came to the CPU after 2.1)."""
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        try:
            call()
        except (RuntimeError, UserWarning):
            return False
    return True


def _half_conv():
    x = torch.ones(1, 1, 3, 3, dtype=torch.float16)
    torch.nn.functional.conv2d(x, x, padding=1)


def _half_autocast():
    with torch.autocast('cpu', dtype=torch.float16):
        pass


#: float16 on the CPU: convs, and autocast to it.
CPU_HALF_CONV = _cpu_supports(_half_conv)
CPU_HALF_AUTOCAST = _cpu_supports(_half_autocast)

# Under pytest-xdist each worker takes its share of the cores (torch's
# default, all of them in every worker, makes the workers fight over each
# core: the quick part took a quarter longer on 2 cores); the tools the
# tests start inherit it.
_WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ['OMP_NUM_THREADS'] = str(_THREADS)
    torch.set_num_threads(_THREADS)

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


def metafile_models(task: str) -> list:
    """The entries of ``configs/metafiles/<task>.yml`` (the one copy of the
    paper's numbers and of our counts of the same models)."""
    import yaml
    with open(osp.join(REPO, 'configs', 'metafiles', f'{task}.yml')) as f:
        return yaml.safe_load(f)['Models']


def paper_models(task: str) -> list:
    """:func:`metafile_models`, each entry plus ``arch`` (its backbone's,
    read from its config: a few seconds for a downstream task's)."""
    models = metafile_models(task)
    for model in models:
        config = Config.fromfile(osp.join(REPO, model['Config']))
        model['arch'] = config.model.backbone.arch
    return models


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


#: The fixtures that train models and keep them for the session (or the
#: module): under pytest-xdist (``make test`` runs a worker per core), the
#: tests that read one run on one worker (``--dist loadgroup``), so that
#: each model is trained once.
TRAINED_FIXTURES = ('trained_segmentor', 'trained_detector',
                    'trained_classifier', 'recipe_run')


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped, saying so, without it. The
    readers of a :data:`TRAINED_FIXTURES` model share an xdist group."""
    skip = pytest.mark.skip(reason='needs a CUDA GPU (none visible)')
    for item in items:
        if 'gpu' in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)
        for name in TRAINED_FIXTURES:
            if name in getattr(item, 'fixturenames', ()):
                item.add_marker(pytest.mark.xdist_group(name))


def pytest_configure(config):
    """``--dist loadgroup`` where it groups nothing (pytest-xdist <= 3.8
    marks a group in its tests' node ids, which pytest >= 9.2 does not let
    it change) would have every worker train each shared model again:
    refused, saying what to do."""
    if config.getoption('dist', 'no') != 'loadgroup' or \
            not config.getoption('numprocesses', None):  # -n 0: one process
        return
    from packaging.version import Version  # pytest's dependency
    xdist = importlib.metadata.version('pytest-xdist')
    if Version(pytest.__version__) >= Version('9.2') and \
            Version(xdist) <= Version('3.8.0'):
        raise pytest.UsageError(
            f'pytest-xdist {xdist} groups no tests on pytest '
            f'{pytest.__version__}: install pytest<9.2 (make install does) '
            'or run the tests in one process (make test TEST_WORKERS=0)')


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
    """32 fixed random 32x32 images, two classes: 8 iterations of 4 before
    the sampler starts over (where mmengine's iteration loop sleeps 2 s)."""

    def __len__(self):
        return 32

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


@pytest.fixture(params=['torch allow-list', 'restricted unpickler'])
def loading_route(request, monkeypatch):
    """Which of the two routes pelk_mm's checkpoint loaders take: torch's
    allow-list (torch >= 2.6) or pelk_mm's restricted unpickler (what older
    torch gets)."""
    if request.param == 'torch allow-list':
        if not safe_loading.has('safe_globals'):
            pytest.skip('torch < 2.6 has no allow-list of this form')
    else:
        monkeypatch.setattr(safe_loading, 'has', lambda feature: False)
    return request.param


# ------------------------------------ the real configs, reduced, run here

# PeLK reduced for in-process runs of the real configs: one block per stage
# and narrow stages, with PeLK-T's kernels, grids, peripheral convs, small
# kernels and positional embeddings (they are what the code paths differ by).
MINI_ARCH = dict(
    depths=[1, 1, 1, 1],
    channels=[16, 32, 48, 64],
    kernel_sizes=[51, 49, 47, 13])


def mini_overrides(cfg: Config, arch: dict = MINI_ARCH) -> dict:
    """What reduces the model of ``cfg`` (a task config of ``configs/``) to
    a PeLK of ``arch`` from scratch (without the ImageNet file it names):
    the backbone, and the ``in_channels`` of the layers that take its
    outputs (mmseg's heads, mmdet's neck, mmpretrain's head); a dict for
    ``Config.merge_from_dict``."""
    channels = list(arch['channels'])
    model = dict(backbone=dict(arch=dict(arch, _delete_=True)))
    if cfg.model.backbone.get('init_cfg') is not None:
        # An ImageNet file of the full arch; a backbone without one keeps
        # its own initialisation.
        model['backbone']['init_cfg'] = None
    if cfg.model.get('decode_head'):
        model['decode_head'] = dict(in_channels=channels)
    if cfg.model.get('auxiliary_head'):
        index = cfg.model.auxiliary_head.in_index
        model['auxiliary_head'] = dict(in_channels=channels[index])
    if cfg.model.get('neck', {}).get('in_channels'):
        model['neck'] = dict(in_channels=channels)
    if cfg.model.get('head', {}).get('in_channels'):
        model['head'] = dict(in_channels=channels[-1])
    return dict(model=model)


def write_mini_config(path,
                      name: str,
                      arch: dict = MINI_ARCH,
                      options: Optional[dict] = None,
                      **settings) -> str:
    """Write to ``path`` the config ``configs/<name>`` (or a full path)
    with :func:`mini_overrides`, then ``settings`` (top-level keys, merged
    as a config file's are), then ``options`` (as ``--cfg-options``);
    return its path as a str."""
    cfg = Config.fromfile(
        name if osp.isabs(name) else osp.join(REPO, 'configs', name))
    cfg.merge_from_dict(mini_overrides(cfg, arch))
    cfg.merge_from_dict(settings)
    cfg.merge_from_dict(options or {})
    cfg.dump(str(path))
    return str(path)


@pytest.fixture(scope='session')
def mini_config():
    """``mini_config(path, name, arch=MINI_ARCH, options=None, **settings)``:
    :func:`write_mini_config`."""
    return write_mini_config


_last_runner_second = [0]


def _as_in_a_new_process() -> None:
    """What a run in this process needs to write where one in a new process
    would. mmengine names a run (its logger and their files) after the
    config file and the second it starts: a second run of the same file in
    the same second would write into the first one's; so one run a second.
    And it keeps visualizers by name, the codebases' configs name theirs
    'visualizer': a run would write its scalars with the visualizer (and
    into the work dir) of the first run in the process; so none are kept."""
    from mmengine.visualization import Visualizer
    now = time.time()
    if int(now) == _last_runner_second[0]:
        time.sleep(1.01 - now % 1)
    _last_runner_second[0] = int(time.time())
    classes = [Visualizer]
    while classes:
        cls = classes.pop()
        cls._instance_dict.clear()
        classes += cls.__subclasses__()


@contextmanager
def _output_to(out: io.StringIO, err: io.StringIO):
    """stdout and stderr into ``out`` and ``err``, with the stream handlers
    of the loggers made before (mmengine's, kept by name) writing there
    too, as they would in a new process."""
    loggers = [
        *logging.Logger.manager.loggerDict.values(),
        *MMLogger._instance_dict.values()
    ]
    handlers = [
        handler for logger in loggers
        for handler in getattr(logger, 'handlers', [])
        if type(handler) is logging.StreamHandler
    ]
    saved = [handler.stream for handler in handlers]
    for handler in handlers:  # not setStream: it flushes, maybe a closed one
        handler.stream = err if handler.stream in (sys.stderr,
                                                   sys.__stderr__) else out
    try:
        with redirect_stdout(out), redirect_stderr(err):
            yield
    finally:
        for handler, stream in zip(handlers, saved):
            handler.stream = stream


class ToolRun(NamedTuple):
    """What a run of a tool gave: its exit code and output."""
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope='session')
def run_tool_here():
    """``run_tool_here(script, *args, check=True, builds_a_runner=True)``:
    run ``script`` (a path under the repository) in this process as
    ``python script *args`` from the repository root would, its folder
    first on sys.path; returns a :class:`ToolRun` (a ``SystemExit`` message
    is its stderr, exit code 1; an exception's traceback, 1). Seconds
    cheaper than :func:`run_tool`, which starts a process: tests use that
    where the process itself is what they check. ``builds_a_runner=False``
    (a converter) skips what a runner needs of a new process (its own
    second, for its timestamp)."""

    def run(script, *args, check=True, builds_a_runner=True):
        path = osp.join(REPO, script)
        out, err = io.StringIO(), io.StringIO()
        code = 0
        if builds_a_runner:
            _as_in_a_new_process()
        with pytest.MonkeyPatch.context() as patch, _output_to(out, err):
            patch.setattr(sys, 'argv', [path, *map(str, args)])
            patch.syspath_prepend(osp.dirname(path))
            patch.chdir(REPO)
            try:
                runpy.run_path(path, run_name='__main__')
            except SystemExit as exit:
                if isinstance(exit.code, str):
                    print(exit.code, file=sys.stderr)
                    code = 1
                else:
                    code = exit.code or 0
            except Exception:  # as Python ends a script: the traceback
                traceback.print_exc()
                code = 1
        result = ToolRun(code, out.getvalue(), err.getvalue())
        if check and code != 0:
            raise AssertionError(f'{script} {args} failed:\n'
                                 f'{result.stdout[-3000:]}\n'
                                 f'{result.stderr[-3000:]}')
        return result

    return run


class _KeepMetrics(Hook):
    """Keeps the metrics of every validation of a run."""

    def __init__(self):
        self.metrics = []

    def after_val_epoch(self, runner, metrics=None):
        self.metrics.append(dict(metrics or {}))


class Trained(NamedTuple):
    """A run of :func:`train_here`: its config file and work dir, the
    losses of every iteration, the metrics of every validation, its last
    checkpoint and its log."""
    config: str
    work_dir: str
    losses: list
    metrics: list
    checkpoint: str
    log: str


def train_here(config: str, work_dir, **options) -> Trained:
    """Train the config file ``config`` with mmengine's Runner in this
    process (``options``: as ``--cfg-options``) into ``work_dir``."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options)
    cfg.work_dir = str(work_dir)
    _as_in_a_new_process()
    runner = Runner.from_cfg(cfg)
    kept = _KeepMetrics()
    runner.register_hook(kept)
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0].tolist()
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        log = f.read()
    return Trained(config, str(work_dir), losses, kept.metrics, checkpoint,
                   log)


# ------------------------------- the generated datasets, one model per task
# Made once per test run and shared: each model is its task's demo config
# with the PeLK reduced (MINI_ARCH), trained in this process.

SEG_DEMO = osp.join(REPO, 'configs', 'demo', 'upernet_pelk_t_ade20k_demo.py')
DET_DEMO = osp.join(REPO, 'configs', 'demo',
                    'cascade_mask_rcnn_pelk_t_coco_demo.py')
CLS_DEMO = osp.join(REPO, 'configs', 'demo', 'pelk_mini_in1k_demo.py')


def data_roots(root) -> dict:
    """The data settings of a demo config for the dataset at ``root`` (for
    ADE20K its ``ADEChallengeData2016``), for a config file."""
    root = str(root)
    return {
        loader: dict(dataset=dict(data_root=root))
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    }


def coco_data(root) -> dict:
    """:func:`data_roots` for the detection demo, with its evaluators'
    annotation file."""
    root = str(root)
    ann = osp.join(root, 'annotations', 'instances_val2017.json')
    return dict(
        data_roots(root.rstrip('/') + '/'),
        val_evaluator=dict(ann_file=ann),
        test_evaluator=dict(ann_file=ann))


@pytest.fixture(scope='session')
def ade(tmp_path_factory):
    """A generated ADE20K: 64 training and 16 validation scenes."""
    return generate_ade20k(str(tmp_path_factory.mktemp('ade')), 64, 16)


@pytest.fixture(scope='session')
def coco(tmp_path_factory):
    """A generated COCO: 120 training and 30 validation images."""
    return generate_coco(str(tmp_path_factory.mktemp('coco')), 120, 30)


@pytest.fixture(scope='session')
def imagenet(tmp_path_factory):
    """A generated ImageNet: 6 classes, 100 + 20 images each."""
    return generate_imagenet(str(tmp_path_factory.mktemp('imagenet')))


@pytest.fixture(scope='session')
def seg_config(ade, tmp_path_factory):
    """The segmentation demo reduced, on :func:`ade`: a config file."""
    return write_mini_config(
        tmp_path_factory.mktemp('seg_config') / 'seg_demo.py', SEG_DEMO,
        **data_roots(ade))


# The detector's FPN, its RoI features and its RoI heads' convs at this
# width (the demo's: 256 and 64): RoIAlign on the CPU, forward and backward,
# takes most of a training step at 256, in proportion to the width, and at
# 32 the heads' convs at 64 took another third (0.34 s a step, 0.23 s at 32).
DET_WIDTH = 32


def narrow_detector(width: int = DET_WIDTH) -> dict:
    """``--cfg-options`` that build the demo detector's FPN, RPN and RoI
    heads ``width`` channels wide (the RoI heads' convs too)."""
    options = {
        'model.neck.out_channels': width,
        'model.rpn_head.in_channels': width,
        'model.rpn_head.feat_channels': width,
        'model.roi_head.bbox_roi_extractor.out_channels': width,
        'model.roi_head.mask_roi_extractor.out_channels': width,
        'model.roi_head.mask_head.in_channels': width,
        'model.roi_head.mask_head.conv_out_channels': width,
    }
    for stage in range(3):
        options[f'model.roi_head.bbox_head.{stage}.in_channels'] = width
        options[f'model.roi_head.bbox_head.{stage}.conv_out_channels'] = width
    return options


@pytest.fixture(scope='session')
def det_config(coco, tmp_path_factory):
    """The detection demo reduced (and :func:`narrow_detector`), on
    :func:`coco`: a config file."""
    return write_mini_config(
        tmp_path_factory.mktemp('det_config') / 'det_demo.py',
        DET_DEMO,
        options=narrow_detector(),
        **coco_data(coco))


@pytest.fixture(scope='session')
def cls_config(imagenet, tmp_path_factory):
    """The classification demo reduced, on :func:`imagenet`."""
    return write_mini_config(
        tmp_path_factory.mktemp('cls_config') / 'cls_demo.py', CLS_DEMO,
        **data_roots(imagenet))


# How long each shared model trains: long enough that a model that does not
# learn fails the bounds of the tests that read it (test_demo_learns...),
# no longer. The numbers measured with them are beside those bounds.
SEG_ITERS = 60
DET_EPOCHS = 8
CLS_EPOCHS = 10


def train_to_the_end(config, work_dir, length: int, by_epoch: bool,
                     **options) -> Trained:
    """:func:`train_here` for ``length`` epochs or iterations (and the
    demo's main lr schedule with them), validated and saved at the end."""
    return train_here(
        config, work_dir, **{
            f'train_cfg.max_{"epochs" if by_epoch else "iters"}': length,
            'train_cfg.val_interval': length,
            'default_hooks.checkpoint.interval': length,
            'param_scheduler.1.end': length,
            **options
        })


@pytest.fixture(scope='session')
def trained_segmentor(seg_config, tmp_path_factory):
    """The reduced segmentation demo trained for :data:`SEG_ITERS`
    iterations and validated at the end: a :class:`conftest.Trained`."""
    return train_to_the_end(
        seg_config,
        tmp_path_factory.mktemp('seg_run'),
        SEG_ITERS,
        by_epoch=False,
        **{
            'default_hooks.logger.interval': 10,
            'param_scheduler.0.end': 10,
            'param_scheduler.1.begin': 10,
        })


@pytest.fixture(scope='session')
def trained_detector(det_config, tmp_path_factory):
    """The reduced detection demo trained for :data:`DET_EPOCHS` epochs
    and validated at the end."""
    return train_to_the_end(
        det_config,
        tmp_path_factory.mktemp('det_run'),
        DET_EPOCHS,
        by_epoch=True,
        **{'param_scheduler.1.milestones': [DET_EPOCHS - 1]})


@pytest.fixture(scope='session')
def trained_classifier(cls_config, tmp_path_factory):
    """The reduced classification demo (dynamic sparsity, EMA) trained for
    :data:`CLS_EPOCHS` epochs and validated at the end."""
    return train_to_the_end(
        cls_config,
        tmp_path_factory.mktemp('cls_run'),
        CLS_EPOCHS,
        by_epoch=True)
