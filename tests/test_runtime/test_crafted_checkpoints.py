"""An adversarial corpus of checkpoints, tried on every route a checkpoint
takes into pelk_mm: mmengine's CheckpointLoader (a path and a URL served on
127.0.0.1), the backbone's init_cfg, mmengine's load_checkpoint (what
``load_from`` calls), ``resume``, ``tools/test.py``, the converter and the
deployment loader. A crafted file is refused with a message naming the
file, no payload runs and no process crashes (a forged numpy value handed
to numpy would end this one); the good files load on every route."""
import functools
import http.server
import io
import os
import os.path as osp
import threading
from unittest import mock

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader, load_checkpoint

from pelk_mm import deployment
from pelk_mm.models import PeLK

pytestmark = pytest.mark.usefixtures('loading_route')

ARCH = dict(
    depths=[1, 1, 1, 1],
    channels=[16, 24, 32, 40],
    kernel_sizes=[13, 11, 9, 7])

# What each kind of refusal says (pelk_mm.runtime.safe_loading).
RUNS_CODE = 'could run code'
NOT_DATA = 'not plain data'
NOT_A_CHECKPOINT = 'not a PyTorch checkpoint'


class Reduces:
    """Pickles as ``func(*args)``, then ``state`` given to the result's
    ``__setstate__`` (BUILD): how a crafted file names what it likes."""

    def __init__(self, func, args, state=None):
        self.reduced = (func, args) if state is None else (func, args, state)

    def __reduce__(self):
        return self.reduced


def forged_array(dtype, state_of_dtype, data: bytes, shape=(1, )):
    """An ndarray pickle whose dtype is ``np.dtype(dtype)`` given the state
    ``state_of_dtype``: what numpy's own unpickling takes on trust."""
    forged_dtype = Reduces(np.dtype, (dtype, False, True), state_of_dtype)
    return Reduces(np.core.multiarray._reconstruct, (np.ndarray, (0, ), b'b'),
                   (1, shape, forged_dtype, False, data))


def weights() -> dict:
    torch.manual_seed(0)
    return {f'backbone.{k}': v for k, v in PeLK(ARCH).state_dict().items()}


def history_buffer(**extra) -> HistoryBuffer:
    buffer = HistoryBuffer()
    buffer.update(1.5)
    buffer.__getstate__()  # its statistics methods join its attributes
    buffer.__dict__.update(extra)
    return buffer


def crafted_meta(marker: str) -> dict:
    """The ``meta`` of each crafted file, by name: (meta, refusal)."""
    plain_f8 = (3, '<', None, None, None, -1, -1, 0)
    return {
        'payload': (Reduces(os.system, (f'touch {marker}', )), RUNS_CODE),
        # An object field over the array's bytes: a pointer the file plants.
        'object-pointer': (forged_array('V8', (3, '|', None, ('p', ), {
            'p': (np.dtype('O'), 0)
        }, 8, 1, 63), b'A' * 8), NOT_DATA),
        # A float dtype whose field lies 1 MiB past the data.
        'field-out-of-bounds': (forged_array('f8', (3, '<', None, ('x', ), {
            'x': (np.dtype('f8'), 1 << 20)
        }, 8, 1, 0), b'\0' * 8), NOT_DATA),
        'shape-past-its-data':
        (forged_array('f8', plain_f8, b'\0' * 8, shape=(1 << 20, )), NOT_DATA),
        'object-scalar': (Reduces(np.core.multiarray.scalar,
                                  (np.dtype('O'), b'\0' * 8)), NOT_DATA),
        'history-buffer-extra-attribute': (history_buffer(evil=1), NOT_DATA),
        'history-buffer-remapped-method': (history_buffer(
            statistics_methods={'mean': torch._utils._rebuild_tensor_v2}),
                                           NOT_DATA),
        'rebuild-from-type-foreign-function':
        (Reduces(torch._tensor._rebuild_from_type_v2,
                 (os.system, torch.Tensor, (f'touch {marker}', ), {})),
         RUNS_CODE),
        'call-of-a-class': (Reduces(threading.Thread, ()), RUNS_CODE),
    }


def save(path, meta, legacy=False) -> None:
    torch.save({
        'state_dict': weights(),
        'meta': meta
    },
               path,
               _use_new_zipfile_serialization=not legacy)


def numpy1_checkpoint(path) -> None:
    """A checkpoint as numpy 1.x wrote it: its reconstructors under
    ``numpy.core`` (the legacy format keeps the pickle's bytes as they are,
    and GLOBAL names carry no length)."""
    buffer = io.BytesIO()
    meta = {
        'epoch': np.int64(3),
        'scores': np.arange(4, dtype='>f4'),
        'hub': history_buffer()
    }
    torch.save({
        'state_dict': weights(),
        'meta': meta
    },
               buffer,
               _use_new_zipfile_serialization=False)
    data = buffer.getvalue().replace(b'numpy._core.multiarray',
                                     b'numpy.core.multiarray')
    assert b'numpy.core.multiarray' in data
    with open(path, 'wb') as f:
        f.write(data)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    """``{name: (path, refusal or None)}``: the crafted files, random bytes,
    and two good files (numpy 2 and numpy 1.x names, numpy values and a
    HistoryBuffer in their meta)."""
    root = tmp_path_factory.mktemp('corpus')
    marker = str(root / 'payload-ran')
    files = {}
    # HistoryBuffer pickles what __getstate__ gives, with its own methods.
    with mock.patch.object(HistoryBuffer, '__getstate__',
                           lambda buffer: dict(vars(buffer))):
        for name, (meta, refusal) in crafted_meta(marker).items():
            save(root / f'{name}.pth', meta)
            files[name] = (root / f'{name}.pth', refusal)
    (root / 'random-bytes.pth').write_bytes(
        np.random.default_rng(0).bytes(4096))
    files['random-bytes'] = (root / 'random-bytes.pth', NOT_A_CHECKPOINT)
    save(root / 'good.pth', {
        'iter': np.int64(2),
        'lr': np.float32(1e-3),
        'hub': history_buffer()
    })
    files['good'] = (root / 'good.pth', None)
    numpy1_checkpoint(root / 'good-numpy1.pth')
    files['good-numpy1'] = (root / 'good-numpy1.pth', None)
    return root, marker, files


@pytest.fixture(scope='module')
def served(corpus):
    """The corpus over http on 127.0.0.1: its base URL."""
    root = str(corpus[0])

    class Quiet(http.server.SimpleHTTPRequestHandler):

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """torch.hub's cache in a folder of this test's own."""
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    return tmp_path / 'hub'


def through_loader(path, **_):
    return CheckpointLoader.load_checkpoint(str(path))


def through_url(path, served, **_):
    return CheckpointLoader.load_checkpoint(f'{served}/{osp.basename(path)}')


def through_init_cfg(path, **_):
    model = PeLK(
        ARCH,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()


def through_load_from(path, **_):
    load_checkpoint(PeLK(ARCH), str(path), revise_keys=[(r'^backbone\.', '')])


def through_resume(path, make_runner, tmp_path, **_):
    runner = make_runner(tmp_path / 'run', max_iters=2, resume=True)
    runner.resume(str(path))


def through_deployment(path, **_):
    cfg = Config(
        dict(
            default_scope='mmpretrain',
            model=dict(
                type='ImageClassifier',
                backbone=dict(type='pelk_mm.PeLK', arch=ARCH),
                neck=dict(type='GlobalAveragePooling'))))
    deployment.load_model(cfg, str(path))


def through_converter(path, run_tool_here, tmp_path, **_):
    run = run_tool_here(
        'tools/model_converters/cls_to_backbone.py',
        path,
        tmp_path / 'backbone.pth',
        check=False,
        builds_a_runner=False)
    if run.returncode:
        raise RuntimeError(run.stderr)


ROUTES = {
    'CheckpointLoader': through_loader,
    'url': through_url,
    'init_cfg': through_init_cfg,
    'load_from': through_load_from,
    'resume': through_resume,
    'deployment': through_deployment,
    'cls_to_backbone': through_converter,
}


@pytest.mark.parametrize('route', ROUTES)
def test_every_route_refuses_every_crafted_file(route, corpus, served, hub_dir,
                                                make_runner, run_tool_here,
                                                tmp_path):
    root, marker, files = corpus
    tried = {}
    for name, (path, refusal) in files.items():
        if refusal is None:
            continue
        with pytest.raises(Exception) as refused:
            ROUTES[route](
                path,
                served=served,
                make_runner=make_runner,
                run_tool_here=run_tool_here,
                tmp_path=tmp_path / name)
        tried[name] = str(refused.value)
        assert not osp.exists(marker), f'{name}: the payload ran'
    for name, message in tried.items():
        assert f'{name}.pth' in message, (name, message)
        assert files[name][1] in message, (name, message)


@pytest.mark.parametrize('route', ROUTES)
def test_every_route_loads_the_good_files(route, corpus, served, hub_dir,
                                          make_runner, run_tool_here,
                                          tmp_path):
    _, _, files = corpus
    for name in ('good', 'good-numpy1'):
        path = files[name][0]
        if route == 'resume':  # a toy model's run: the meta alone matters
            loaded = CheckpointLoader.load_checkpoint(str(path))
        else:
            loaded = ROUTES[route](
                path,
                served=served,
                make_runner=make_runner,
                run_tool_here=run_tool_here,
                tmp_path=tmp_path / name)
        if route in ('CheckpointLoader', 'url', 'resume'):
            meta = loaded['meta']
            hub = meta['hub']
            assert isinstance(hub, HistoryBuffer) and hub.mean() == 1.5
            if name == 'good-numpy1':
                assert meta['epoch'] == 3 and meta['epoch'].dtype == np.int64
                assert meta['scores'].dtype == np.dtype('>f4')
                np.testing.assert_array_equal(meta['scores'], np.arange(4))
            else:
                assert meta['iter'] == 2 and meta['lr'].dtype == np.float32


def test_test_tool_refuses_a_crafted_file_and_takes_a_url(
        corpus, served, hub_dir, seg_config, run_tool_here):
    """tools/test.py: a payload file is refused naming it (exit code 1),
    and a URL is loaded (here a checkpoint that does not fit the segmentor:
    the fit check, not "not found", stops it)."""
    root, marker, files = corpus
    run = run_tool_here(
        'tools/test.py', seg_config, files['payload'][0], check=False)
    assert run.returncode == 1 and 'payload.pth' in run.stderr
    assert RUNS_CODE in run.stderr and not osp.exists(marker)
    run = run_tool_here(
        'tools/test.py', seg_config, f'{served}/good.pth', check=False)
    assert run.returncode == 1 and 'not found' not in run.stderr
    assert 'good.pth' in run.stderr and 'does not fit' in run.stderr
