"""Loading checkpoints safely (weights_only with an allow-list, or on a
torch older than 2.6 pelk_mm's restricted unpickler), ImageNet weights
through init_cfg, and resuming. Every test runs through both routes where
torch has both."""
import collections
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import load_checkpoint

from pelk_mm.models import PeLK
from pelk_mm.ops.torch_features import TORCH_VERSION
from pelk_mm.runtime.safe_loading import TRUST_VARIABLE, load_from_local

ARCH = dict(
    depths=[1, 1, 1, 1],
    channels=[16, 24, 32, 40],
    kernel_sizes=[13, 11, 9, 7])

pytestmark = pytest.mark.usefixtures('loading_route')


def save_classifier_checkpoint(path, backbone):
    """A checkpoint as mmpretrain writes it, numpy scalars in its meta."""
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(10, 40)
    torch.save(
        {
            'state_dict': state,
            'meta': {
                'epoch': np.int64(300),
                'best_acc': np.float64(0.8),
                'dataset_meta': {
                    'classes': ('a', 'b')
                }
            }
        }, path)


@pytest.mark.skipif(
    TORCH_VERSION < (2, 6), reason='torch < 2.6 loads with weights_only=False')
def test_plain_torch_load_refuses_numpy_meta(tmp_path):
    """Guards the premise of the tests below (torch >= 2.6 defaults)."""
    path = tmp_path / 'cls.pth'
    save_classifier_checkpoint(path, PeLK(ARCH))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_pretrained_init_cfg_loads_numpy_meta_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = PeLK(ARCH)
    path = tmp_path / 'cls.pth'
    save_classifier_checkpoint(path, source)
    model = PeLK(
        ARCH,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_pretrained_file_that_does_not_fit_is_refused(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.foo.weight': torch.zeros(3)}}, path)
    model = PeLK(
        ARCH,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    with pytest.raises(
            ValueError,
            match=r'other.pth.* does not fit this PeLK: it leaves \d+ of '
            r'its \d+ weights unloaded.*look like foo.weight'):
        model.init_weights()
    # Another prefix: nothing under it.
    model = PeLK(
        ARCH,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='encoder.'))
    with pytest.raises(
            ValueError,
            match="no weights under the prefix "
            "'encoder.'.*backbone.foo.weight"):
        model.init_weights()
    # Another arch: shapes no re-gridding explains.
    wider = dict(ARCH, channels=[8, 16, 24, 32])
    save_classifier_checkpoint(path, PeLK(wider))
    model = PeLK(
        ARCH,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    with pytest.raises(ValueError, match='does not fit this PeLK'):
        model.init_weights()


def test_classifier_file_may_lack_only_the_dense_output_norms(
        tmp_path, mmlogger_records):
    source = PeLK(ARCH)  # a classifier's backbone: norm3 only
    path = tmp_path / 'cls.pth'
    save_classifier_checkpoint(path, source)
    dense = PeLK(
        ARCH,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    dense.init_weights()
    text = '\n'.join(r.getMessage() for r in mmlogger_records)
    assert f"not in {path} (a classifier has only its last stage's output " \
        'norm), initialised' in text and 'norm0.weight' in text
    for key, value in source.state_dict().items():
        assert torch.equal(dense.state_dict()[key], value), key


def test_missing_and_corrupt_checkpoints_name_the_file(tmp_path):
    missing = tmp_path / 'nowhere.pth'
    model = PeLK(
        ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(missing)))
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        model.init_weights()
    corrupt = tmp_path / 'corrupt.pth'
    save_classifier_checkpoint(corrupt, PeLK(ARCH))
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    model = PeLK(
        ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(corrupt)))
    with pytest.raises(RuntimeError, match='corrupt.pth.*truncated, corrupt'):
        model.init_weights()


def test_runner_resumes(tmp_path, make_runner):
    runner = make_runner(tmp_path, max_iters=2)
    runner.train()
    assert (tmp_path / 'iter_2.pth').is_file()
    if TORCH_VERSION >= (2, 6):  # what pelk_mm's loader is for
        with pytest.raises(pickle.UnpicklingError):
            torch.load(tmp_path / 'iter_2.pth')  # message hub, numpy state

    resumed = make_runner(tmp_path, max_iters=4, resume=True)
    resumed.train()
    assert resumed.iter == 4
    trained = torch.load(tmp_path / 'iter_2.pth', weights_only=False)
    final = torch.load(tmp_path / 'iter_4.pth', weights_only=False)
    assert final['meta']['iter'] == 4
    # Resuming continued from the saved weights and optimizer state.
    assert trained['optimizer']['state'] and final['optimizer']['state']
    step = next(iter(final['optimizer']['state'].values()))['step']
    assert float(step) == 4


# ------------------------------------------------- what a checkpoint may hold


class WritesMarker:
    """Unpickling it runs code: it creates the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


class ReachesIntoHistoryBuffer:
    """``getattr`` on an allowed class, towards a function's globals."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


class LegacyMeta:
    """A harmless object that older tools pickled into a checkpoint."""


def test_checkpoint_that_runs_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / 'payload-ran'
    path = tmp_path / 'crafted.pth'
    torch.save(
        {
            'state_dict': PeLK(ARCH).state_dict(),
            'meta': {
                'note': WritesMarker(marker)
            }
        }, path)
    model = PeLK(ARCH)
    with pytest.raises(RuntimeError) as refused:
        load_checkpoint(model, str(path))  # what tools/test.py calls
    message = str(refused.value)
    assert 'crafted.pth' in message and 'posix.system' in message
    assert f'{TRUST_VARIABLE}=1' in message
    initialised = PeLK(
        ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match='refused to load'):
        initialised.init_weights()
    assert not marker.exists()


def test_getattr_is_allowed_only_for_history_buffer_statistics(tmp_path):
    path = tmp_path / 'crafted.pth'
    torch.save({'x': ReachesIntoHistoryBuffer()}, path)
    with pytest.raises(RuntimeError, match='HistoryBuffer'):
        load_from_local(str(path))
    buffer = HistoryBuffer()
    buffer.update(2.0)
    torch.save({'buffer': buffer}, path)
    loaded = load_from_local(str(path))['buffer']
    assert loaded.mean() == 2.0 and loaded.statistics('max') == 2.0


def test_trusted_legacy_file_needs_the_opt_in(tmp_path, monkeypatch):
    path = tmp_path / 'legacy.pth'
    torch.save({'state_dict': {}, 'meta': LegacyMeta()}, path)
    with pytest.raises(RuntimeError, match='LegacyMeta'):
        load_from_local(str(path))
    monkeypatch.setenv(TRUST_VARIABLE, '1')
    for _ in range(2):  # warns every time, not once per process
        with pytest.warns(UserWarning, match='weights_only=False'):
            assert isinstance(load_from_local(str(path))['meta'], LegacyMeta)


@pytest.mark.skipif(
    TORCH_VERSION < (2, 6), reason='torch < 2.6 loads with weights_only=False')
def test_allow_list_does_not_leak_into_plain_torch_load(tmp_path):
    path = tmp_path / 'hub.pth'
    buffer = HistoryBuffer()
    buffer.update(np.float64(1.5))
    torch.save({'meta': {'iter': np.int64(2)}, 'hub': buffer}, path)
    allowed_before = set(torch.serialization.get_safe_globals())
    assert load_from_local(str(path))['meta']['iter'] == 2
    assert set(torch.serialization.get_safe_globals()) == allowed_before
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_containers_of_values_load_through_both_routes(tmp_path):
    """What mmdet writes into a checkpoint's meta (a Counter of the dataset's
    classes) and other containers of values that torch's own weights-only
    loader allows."""
    path = tmp_path / 'det.pth'
    meta = {
        'counts': collections.Counter(square=3),
        'ids': {1, 2},
        'raw': bytearray(b'ab'),
        'z': complex(1, 2)
    }
    torch.save({'state_dict': {}, 'meta': meta}, path)
    assert load_from_local(str(path))['meta'] == meta
