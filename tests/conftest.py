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

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Where no GPU is, the Triton kernels (path='triton') run through Triton's
# interpreter on CPU tensors; it is chosen when triton is first imported,
# which none of the imports above does.
if not torch.cuda.is_available():
    assert 'triton' not in sys.modules, 'set TRITON_INTERPRET before triton'
    os.environ.setdefault('TRITON_INTERPRET', '1')


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
