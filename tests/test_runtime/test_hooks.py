import glob
import os.path as osp
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook

from pelk_mm.runtime import find_resumable_checkpoint, load_from_local
from pelk_mm.runtime.hooks import (FiniteLossHook, MMCVOpsCheckHook,
                                   check_mmcv_ops)


def test_progress_bar_hook_draws_every_iteration(tmp_path, capfd, make_runner):
    runner = make_runner(
        tmp_path,
        max_iters=3,
        custom_hooks=[dict(type='pelk_mm.ProgressBarHook')])
    runner.train()
    out = capfd.readouterr().out
    assert re.search(r'\] 3/3, [\d.]+ task/s', out)
    assert '1/3' in out and '2/3' in out


class PoisonAtIteration(Hook):
    """Turns the classifier's weights to NaN before iteration ``at``."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            with torch.no_grad():
                runner.model.head.weight.fill_(float('nan'))


def test_finite_loss_hook_stops_before_a_nan_checkpoint(tmp_path, make_runner):
    # Without the hook (the premise): the run ends normally and its last
    # checkpoint is NaN.
    make_runner(
        tmp_path / 'unguarded',
        max_iters=4,
        custom_hooks=[PoisonAtIteration(3)]).train()
    state = torch.load(
        tmp_path / 'unguarded' / 'iter_4.pth',
        weights_only=False)['state_dict']
    assert state['head.weight'].isnan().all()

    runner = make_runner(
        tmp_path / 'guarded',
        max_iters=4,
        custom_hooks=[
            PoisonAtIteration(3),
            dict(type='pelk_mm.FiniteLossHook')
        ])
    with pytest.raises(
            FloatingPointError,
            match=r'non-finite loss at iteration 3 .*loss=nan'):
        runner.train()
    assert not (tmp_path / 'guarded' / 'iter_4.pth').exists()
    state = torch.load(
        tmp_path / 'guarded' / 'iter_2.pth', weights_only=False)['state_dict']
    assert all(value.isfinite().all() for value in state.values())


class NaNGradientAt(Hook):
    """Gives the classifier's head a NaN gradient at iteration ``at``, its
    loss staying finite (as an overflow in one layer's backward would)."""

    def __init__(self, at):
        self.at = at
        self.handle = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            self.handle = runner.model.head.weight.register_hook(
                lambda grad: torch.full_like(grad, float('nan')))

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


@pytest.mark.parametrize('guarded', [False, True])
def test_finite_loss_hook_stops_at_a_nan_gradient_before_it_is_saved(
        tmp_path, make_runner, guarded):
    """A NaN gradient at a saving iteration, one checkpoint kept: unguarded
    (the loss alone checked) the NaN weights are saved, the last good
    checkpoint is rotated away, and the run stops one iteration later;
    guarded, it stops at once, naming the last good checkpoint, which
    stays."""
    runner = make_runner(
        tmp_path,
        max_iters=6,
        checkpoint=dict(
            type='CheckpointHook',
            interval=2,
            by_epoch=False,
            max_keep_ckpts=1),
        custom_hooks=[
            NaNGradientAt(4),
            dict(type='pelk_mm.FiniteLossHook', check_parameters=guarded)
        ])
    with pytest.raises(FloatingPointError) as stopped:
        runner.train()
    message = str(stopped.value)
    if not guarded:
        assert 'non-finite loss at iteration 5' in message
        assert not (tmp_path / 'iter_2.pth').exists()
        state = torch.load(
            tmp_path / 'iter_4.pth', weights_only=False)['state_dict']
        assert state['head.weight'].isnan().all()
        return
    assert 'non-finite weights after the optimizer step at iteration 4' in \
        message and 'head.weight' in message
    assert f'last checkpoint saved before it is {tmp_path / "iter_2.pth"}' \
        in message
    assert not (tmp_path / 'iter_4.pth').exists()
    state = torch.load(tmp_path / 'iter_2.pth', weights_only=False)
    assert all(value.isfinite().all()
               for value in state['state_dict'].values())


def _finite_loss_hook_on_two_ranks(rank, port, work_dir):
    """One rank: the hook after an iteration whose loss (case 'loss',
    parameters unchecked) or weights (case 'weights') are non-finite on rank
    1 alone; what each rank raised goes to a file."""
    import torch.distributed as dist
    import torch.nn as nn
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    try:
        stopped = {}
        for case in ('loss', 'weights'):
            model = nn.Linear(4, 2)
            loss = torch.tensor(1.0)
            if rank == 1 and case == 'loss':
                loss = torch.tensor(float('nan'))
            if rank == 1 and case == 'weights':
                with torch.no_grad():
                    model.bias[0] = float('inf')
            runner = SimpleNamespace(
                model=model, work_dir=work_dir, iter=4, epoch=0)
            hook = FiniteLossHook(check_parameters=case == 'weights')
            try:
                hook.after_train_iter(runner, 0, outputs=dict(loss=loss))
                stopped[case] = None
            except FloatingPointError as error:
                stopped[case] = str(error)
        torch.save(stopped, f'{work_dir}/stopped_{rank}.pth')
    finally:
        dist.destroy_process_group()


def test_finite_loss_hook_stops_every_rank_together(tmp_path, free_port):
    """A loss or weight that is non-finite on one rank of two stops both at
    that iteration (one left running would save the iteration, as rank 0,
    or wait in the next collective), the other naming the rank."""
    import torch.multiprocessing as mp
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    (tmp_path / 'iter_4.pth').touch()
    mp.spawn(
        _finite_loss_hook_on_two_ranks,
        args=(free_port, str(tmp_path)),
        nprocs=2)
    first = torch.load(tmp_path / 'stopped_0.pth')
    second = torch.load(tmp_path / 'stopped_1.pth')
    assert 'non-finite loss at iteration 5 (epoch 1): loss=nan' in \
        second['loss']
    assert 'non-finite loss at iteration 5 (epoch 1): on rank 1 (here: ' \
        'loss=1.0)' in first['loss']
    assert 'non-finite weights after the optimizer step at iteration 5 ' \
        '(epoch 1): bias (the loss was finite' in second['weights']
    assert 'non-finite weights after the optimizer step at iteration 5 ' \
        '(epoch 1): on rank 1.' in first['weights']
    for message in (*first.values(), *second.values()):
        assert f'last checkpoint saved before it is {tmp_path}/iter_4.pth' \
            in message


def test_finite_loss_hook_reads_losses_that_still_hold_a_graph(recwarn):
    # mmengine's log_vars keep the total loss as the tensor that was
    # backpropagated; reading it must neither warn nor touch its graph.
    weight = torch.ones(2, requires_grad=True)
    loss = (weight * 3).sum()
    runner = SimpleNamespace(
        iter=0, epoch=0, work_dir='w', model=torch.nn.Linear(2, 1))
    FiniteLossHook().after_train_iter(
        runner, 0, outputs=dict(loss=loss, acc=torch.tensor(50.)))
    assert not [w for w in recwarn if 'requires_grad' in str(w.message)]
    loss.backward()
    assert weight.grad.tolist() == [3., 3.]
    with pytest.raises(FloatingPointError, match='loss=inf'):
        FiniteLossHook().after_train_iter(
            runner, 0, outputs=dict(loss=loss / 0.))


CONFIGS = sorted(
    osp.relpath(path, osp.join(REPO, 'configs'))
    for pattern in ('*.py', 'demo/*.py')
    for path in glob.glob(osp.join(REPO, 'configs', pattern)))


@pytest.mark.parametrize('config', CONFIGS)
def test_every_recipe_uses_the_safety_hooks(config, load_config):
    cfg = load_config(config)
    assert cfg.default_hooks.finite_loss.type == 'pelk_mm.FiniteLossHook'
    assert cfg.default_hooks.random_state.type == 'pelk_mm.RandomStateHook'
    if cfg.default_scope == 'mmseg':
        assert cfg.default_hooks.seg_labels.type == \
            'pelk_mm.SegLabelCheckHook'
    if cfg.default_scope == 'mmdet':
        assert cfg.default_hooks.mmcv_ops.type == 'pelk_mm.MMCVOpsCheckHook'
    assert cfg.default_hooks.checkpoint.type == \
        'pelk_mm.AtomicCheckpointHook'
    assert cfg.default_hooks.checkpoint.interval > 0


def test_atomic_checkpoint_hook_survives_a_write_that_dies(
        tmp_path, monkeypatch, make_runner):
    """A write killed half-way (here: the disk fills up) at iteration 4,
    keeping one checkpoint: the run can still resume from iteration 2."""
    put = LocalBackend.put

    def dies_half_way(self, obj, filepath):
        if 'iter_4' in str(filepath):
            put(self, obj[:len(obj) // 2], filepath)
            raise OSError(28, 'No space left on device')
        put(self, obj, filepath)

    def train_until_the_disk_fills(work_dir, hook_type):
        hook = dict(
            type=hook_type, interval=2, by_epoch=False, max_keep_ckpts=1)
        make_runner(work_dir, max_iters=2, checkpoint=hook).train()
        with monkeypatch.context() as patch:
            patch.setattr(LocalBackend, 'put', dies_half_way)
            with pytest.raises(OSError, match='No space left'):
                make_runner(
                    work_dir, max_iters=4, resume=True,
                    checkpoint=hook).train()
        return hook

    # mmengine's hook (the premise): iteration 2's checkpoint was deleted
    # first, last_checkpoint still names it, and iteration 4's is partial.
    theirs = tmp_path / 'theirs'
    train_until_the_disk_fills(theirs, 'CheckpointHook')
    assert not (theirs / 'iter_2.pth').exists()
    assert (theirs / 'last_checkpoint').read_text().endswith('iter_2.pth')
    with pytest.raises(RuntimeError, match='truncated, corrupt'):
        load_from_local(str(theirs / 'iter_4.pth'))

    ours = tmp_path / 'ours'
    hook = train_until_the_disk_fills(ours, 'pelk_mm.AtomicCheckpointHook')
    assert sorted(p.name for p in ours.glob('*.pth')) == ['iter_2.pth']
    assert (ours / 'last_checkpoint').read_text() == str(ours / 'iter_2.pth')
    assert load_from_local(str(ours / 'iter_2.pth'))['meta']['iter'] == 2
    resumed = make_runner(ours, max_iters=4, resume=True, checkpoint=hook)
    resumed.train()
    assert resumed.iter == 4
    assert sorted(p.name for p in ours.glob('*.pth')) == ['iter_4.pth']
    assert not list(ours.glob('.*.partial'))


@pytest.mark.parametrize('hook_type',
                         ['CheckpointHook', 'pelk_mm.AtomicCheckpointHook'])
def test_a_best_checkpoint_write_that_dies_keeps_the_previous_best(
        tmp_path, monkeypatch, make_runner, hook_type):
    """save_best: a better score at iteration 2, then a better one whose
    write dies half-way (the disk fills up). mmengine's hook (the premise)
    has deleted the previous best first and leaves a partial file under the
    new name; ours keeps the previous best and writes nothing under the new
    name."""
    runner = make_runner(
        tmp_path,
        max_iters=2,
        checkpoint=dict(
            type=hook_type,
            interval=2,
            by_epoch=False,
            save_best='acc',
            rule='greater'),
        # A message hub of its own (a runner's is named by the second it
        # starts in): the best score lives there.
        experiment_name=f'save_best-{hook_type}-{tmp_path.name}')
    runner.train()
    hook = next(h for h in runner.hooks if hasattr(h, 'save_best'))
    hook._save_best_checkpoint(runner, {'acc': 0.5})
    first = tmp_path / 'best_acc_iter_2.pth'
    assert load_from_local(str(first))['meta']['iter'] == 2
    put = LocalBackend.put

    def dies_half_way(self, obj, filepath):
        put(self, obj[:len(obj) // 2], filepath)
        raise OSError(28, 'No space left on device')

    runner.train_loop._iter = 3
    with monkeypatch.context() as patch:
        patch.setattr(LocalBackend, 'put', dies_half_way)
        with pytest.raises(OSError, match='No space left'):
            hook._save_best_checkpoint(runner, {'acc': 0.9})
    second = tmp_path / 'best_acc_iter_3.pth'
    if hook_type == 'CheckpointHook':
        assert not first.exists()
        with pytest.raises(RuntimeError, match='truncated, corrupt'):
            load_from_local(str(second))
        return
    assert not second.exists()
    assert load_from_local(str(first))['meta']['iter'] == 2
    hook._save_best_checkpoint(runner, {'acc': 0.9})  # the disk has room
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == [
        'best_acc_iter_3.pth'
    ]
    assert load_from_local(str(second))['meta']['iter'] == 3


def test_resume_skips_an_unreadable_newest_checkpoint(tmp_path, make_runner):
    make_runner(tmp_path, max_iters=4).train()  # iter_2.pth, iter_4.pth
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path /
                                                           'iter_4.pth')
    newest = tmp_path / 'iter_4.pth'
    newest.write_bytes(newest.read_bytes()[:1000])  # a write that died
    with pytest.warns(UserWarning, match='cannot resume from .*iter_4.pth'):
        found = find_resumable_checkpoint(str(tmp_path))
    assert found == str(tmp_path / 'iter_2.pth')
    resumed = make_runner(tmp_path, max_iters=6, resume=True, load_from=found)
    resumed.train()
    assert resumed.iter == 6
    assert find_resumable_checkpoint(str(tmp_path / 'empty')) is None


@pytest.mark.skipif(
    not osp.exists('/proc/self/io'), reason='counts bytes read on Linux')
def test_finding_the_checkpoint_to_resume_reads_its_structure_alone(tmp_path):
    """The resume reads the checkpoint it is given: the look before it
    maps its tensors and reads only the rest (here under 1 of 64 MB)."""

    def bytes_read():
        with open('/proc/self/io') as f:
            return int(f.read().split('rchar:')[1].split()[0])

    torch.save(
        dict(
            meta=dict(iter=2),
            state_dict=dict(weight=torch.zeros(16, 1024, 1024))),
        tmp_path / 'iter_2.pth')
    before = bytes_read()
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path /
                                                           'iter_2.pth')
    assert bytes_read() - before < 2**20


def test_resume_passes_over_weight_files_a_damaged_pointer_and_leftovers(
        tmp_path, make_runner):
    """A newer file of weights alone (no meta) is passed over, as is a
    ``last_checkpoint`` of garbage bytes; a temporary file that a dead
    write left is removed when the next run starts."""
    hook = dict(
        type='pelk_mm.AtomicCheckpointHook', interval=2, by_epoch=False)
    make_runner(tmp_path, max_iters=4, checkpoint=hook).train()
    torch.save({'state_dict': {}}, tmp_path / 'best_acc_iter_4.pth')
    (tmp_path / 'last_checkpoint').write_bytes(b'\xff\xfe\x00garbage')
    with pytest.warns(UserWarning) as warned:
        found = find_resumable_checkpoint(str(tmp_path))
    assert found == str(tmp_path / 'iter_4.pth')
    text = ' '.join(str(w.message) for w in warned)
    assert 'last_checkpoint is unreadable' in text
    assert 'best_acc_iter_4.pth: it holds weights alone' in text
    left = tmp_path / '.iter_6.pth.partial'
    left.write_bytes(b'half a checkpoint')
    resumed = make_runner(
        tmp_path, max_iters=6, resume=True, load_from=found, checkpoint=hook)
    resumed.train()
    assert resumed.iter == 6 and not left.exists()
    assert load_from_local(str(tmp_path / 'iter_6.pth'))['meta']['iter'] == 6


class RecordLosses(Hook):

    def __init__(self):
        self.losses = {}

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self.losses[runner.iter + 1] = float(outputs['loss'])


@pytest.mark.parametrize('restores', [False, True])
def test_resumed_run_draws_what_the_uninterrupted_one_draws(
        tmp_path, restores, make_runner):
    """Drop path draws from torch's generator: the losses after a resume
    equal the uninterrupted run's only if its state was saved."""
    hooks = [dict(type='pelk_mm.RandomStateHook')] if restores else []

    def train(work_dir, max_iters, resume=False):
        record = RecordLosses()
        torch.manual_seed(0)  # the same initial weights
        make_runner(
            work_dir,
            max_iters,
            resume=resume,
            drop_path_rate=0.5,
            custom_hooks=[*hooks, record]).train()
        return record.losses

    uninterrupted = train(tmp_path / 'uninterrupted', 6)
    train(tmp_path / 'interrupted', 2)
    resumed = train(tmp_path / 'interrupted', 6, resume=True)
    assert sorted(resumed) == [3, 4, 5, 6]
    same = [resumed[i] == uninterrupted[i] for i in resumed]
    assert all(same) if restores else not any(same)
    if restores:
        state = load_from_local(str(tmp_path / 'interrupted' / 'iter_2.pth'))
        assert set(state['rng_states']) >= {'torch', 'numpy', 'random'}


def test_random_states_are_left_alone_by_load_from(tmp_path, make_runner):
    """Fine-tuning from a checkpoint (load_from, no resume) starts with the
    run's own seed, not the states saved in the file."""
    hooks = [dict(type='pelk_mm.RandomStateHook')]
    make_runner(tmp_path / 'first', 2, custom_hooks=hooks).train()
    runner = make_runner(
        tmp_path / 'second',
        0,
        custom_hooks=hooks,
        load_from=str(tmp_path / 'first' / 'iter_2.pth'))
    runner.train()
    seeded = torch.get_rng_state()
    make_runner(tmp_path / 'third', 0, custom_hooks=hooks).train()
    assert torch.equal(seeded, torch.get_rng_state())


def test_seg_label_check_hook_names_the_file_and_values_as_stored():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from pelk_mm.runtime import SegLabelCheckHook

    class Dataset:
        metainfo = dict(classes=('sky', 'tree', 'road'))
        ignore_index = 255

    def batch(labels, reduce_zero_label):
        sample = SegDataSample(
            metainfo=dict(
                seg_map_path='a.png', reduce_zero_label=reduce_zero_label))
        sample.gt_sem_seg = PixelData(data=torch.tensor([[labels]]))
        return dict(inputs=[], data_samples=[sample])

    check = SegLabelCheckHook._check
    check(Dataset, batch([0, 1, 2, 255], False))  # classes and ignored
    with pytest.raises(
            ValueError,
            match=r'annotation a.png holds label '
            r'values \[3, 7\] outside the dataset\'s 3 classes '
            r'\(valid values in the file: 0..2, and 255 ignored'):
        check(Dataset, batch([0, 7, 3, 3, 255], False))
    # After reduce_zero_label, file value v is read as v - 1.
    with pytest.raises(
            ValueError,
            match=r'values \[4\] .* 1..3, and 0 and '
            r'255 ignored \(reduce_zero_label\)'):
        check(Dataset, batch([0, 3], True))
    tta = batch([9], False)
    tta['data_samples'] = [tta['data_samples']]  # views of one image
    with pytest.raises(ValueError, match=r'values \[9\]'):
        check(Dataset, tta)


def test_seg_label_check_hook_refuses_an_annotation_of_another_size(
        ade, tmp_path):
    """The segmentation demo's validation pipeline on a generated ADE20K
    whose one annotation is half its image's width: the check names it (and
    its image) before mmseg's metric would fail with a ``stack`` error; the
    other, true-sized, annotations pass, as stored and resized to their
    images (a pipeline that loads annotations before resizing)."""
    import shutil

    import numpy as np
    from conftest import SEG_DEMO, data_roots
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules
    from PIL import Image

    from pelk_mm.runtime import SegLabelCheckHook
    register_all_modules()
    data = tmp_path / 'ade'
    shutil.copytree(ade, data)
    halved = sorted((data / 'annotations' / 'validation').glob('*.png'))[1]
    labels = np.array(Image.open(halved))
    Image.fromarray(labels[:, :labels.shape[1] // 2]).save(halved)
    cfg = Config.fromfile(SEG_DEMO)
    cfg.merge_from_dict(data_roots(data))
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    check = SegLabelCheckHook._check
    check(dataset, pseudo_collate([dataset[0]]), sizes=True)
    with pytest.raises(
            ValueError,
            match=rf'annotation {re.escape(str(halved))} is '
            rf'\({labels.shape[0]}, {labels.shape[1] // 2}\) \(height, '
            rf'width\), its image .*{halved.stem}.jpg '
            rf'\({labels.shape[0]}, {labels.shape[1]}\): an annotation '
            'must be of its image\'s size'):
        check(dataset, pseudo_collate([dataset[0], dataset[1]]), sizes=True)
    pipeline = cfg.val_dataloader.dataset.pipeline
    pipeline.insert(1, pipeline.pop(2))  # annotations loaded, then resized
    pipeline[2].scale = (640, 256)
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    sample = dataset[0]
    assert sample['data_samples'].gt_sem_seg.shape == (256, 320)
    check(dataset, pseudo_collate([sample]), sizes=True)


def test_mmcv_without_cuda_ops_is_refused_for_a_cuda_model():
    cuda = torch.device('cuda', 0)
    with pytest.raises(
            RuntimeError,
            match=r'(?s)runs on cuda:0.*built '
            r'without CUDA.*FORCE_CUDA=1.*nvcc'):
        check_mmcv_ops(cuda, compiled_cuda='not available')
    check_mmcv_ops(cuda, compiled_cuda='12.8', run_ops=lambda device: None)
    check_mmcv_ops(torch.device('cpu'), compiled_cuda='not available')


def test_mmcv_built_for_other_gpus_is_refused_before_the_first_batch():
    """Simulated: mmcv has CUDA ops, but none for this GPU."""

    def no_kernel_image(device):
        raise RuntimeError('CUDA error: no kernel image is available for '
                           'execution on the device')

    with pytest.raises(
            RuntimeError,
            match=r'(?s)fail on cuda:0 .*no kernel image.*compiled with '
            r'CUDA 12\.8.*TORCH_CUDA_ARCH_LIST=.*FORCE_CUDA=1'):
        check_mmcv_ops(
            torch.device('cuda', 0),
            compiled_cuda='12.8',
            run_ops=no_kernel_image)


def test_the_mmcv_ops_probe_runs_and_checks_its_answers(monkeypatch):
    # On the CPU, where mmcv's CPU kernels answer: one box kept, the mean
    # of ones pooled; a kernel that runs but answers zeros is refused.
    import mmcv.ops

    from pelk_mm.runtime.hooks.mmcv_ops_check_hook import run_mmcv_ops
    run_mmcv_ops(torch.device('cpu'))
    monkeypatch.setattr(mmcv.ops, 'roi_align',
                        lambda feature, *args: feature.new_zeros(1, 1, 2, 2))
    with pytest.raises(RuntimeError, match='roi_align of ones gave'):
        run_mmcv_ops(torch.device('cpu'))


def test_mmcv_ops_check_hook_looks_where_the_model_runs(monkeypatch):
    """Simulated: mmcv built without CUDA, a model whose parameters are on
    the GPU (a CPU tensor reporting ``cuda:0``)."""
    from pelk_mm.runtime.hooks import mmcv_ops_check_hook
    monkeypatch.setattr(mmcv_ops_check_hook, 'mmcv_cuda_version',
                        lambda: 'not available')

    class OnDevice(torch.nn.Module):

        def __init__(self, device):
            super().__init__()
            self.device = device

        def parameters(self, recurse=True):
            yield SimpleNamespace(device=torch.device(self.device))

    hook = MMCVOpsCheckHook()
    hook.before_run(SimpleNamespace(model=OnDevice('cpu')))
    with pytest.raises(RuntimeError, match='built without CUDA'):
        hook.before_run(SimpleNamespace(model=OnDevice('cuda')))
