"""UperNet-PeLK on ADE20K: configs, counts, data, tools, end to end."""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import (MINI_ARCH, SEG_ITERS, data_roots, metafile_models,
                      mini_overrides)
from PIL import Image

from pelk_mm.synthetic import SCENE_CLASSES, generate_ade20k

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'configs', 'demo', 'upernet_pelk_t_ade20k_demo.py')
# Where mmseg is not installed (a GPU machine with mmcv-lite), these tests
# skip.
MMSEG_TOOLS = osp.join(
    osp.dirname(pytest.importorskip('mmseg').__file__), '.mim', 'tools')


def data_options(data_root, *loaders):
    return [f'{loader}.dataset.data_root={data_root}' for loader in loaders]


def train_demo(run_tool, work_dir, *options, config=DEMO):
    """``tools/train.py`` on ``config`` (the demo's) into ``work_dir`` with
    ``--cfg-options options`` (``run_tool``: in a process of its own or
    this one; failures expected)."""
    return run_tool(
        'tools/train.py',
        config,
        '--work-dir',
        str(work_dir),
        '--cfg-options',
        *options,
        check=False)


# The drop path of the paper's ADE20K recipe for each of its archs.
PAPER_DROP_PATH = {'tiny': 0.4, 'small': 0.3, 'base': 0.4, 'base-101': 0.4}
INDEXED = metafile_models('segmentation')


@pytest.mark.parametrize('indexed', INDEXED, ids=[m['Name'] for m in INDEXED])
def test_configs_follow_the_paper_recipe(indexed, load_config):
    """Every config of the model index: the paper's recipe, its heads as
    wide as its arch's stages."""
    from pelk_mm.models import PeLK
    cfg = load_config(osp.relpath(indexed['Config'], 'configs'))
    assert cfg.custom_imports.imports == ['pelk_mm']
    assert cfg.default_scope == 'mmseg'
    backbone = cfg.model.backbone
    assert backbone.type == 'pelk_mm.PeLK'
    channels = PeLK.arch_settings[backbone.arch]['channels']
    if backbone.arch in PAPER_DROP_PATH:
        assert backbone.drop_path_rate == PAPER_DROP_PATH[backbone.arch]
    assert backbone.init_cfg.type == 'Pretrained'
    assert backbone.init_cfg.prefix == 'backbone.'
    assert cfg.model.pretrained is None
    assert cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.decode_head.in_channels == channels
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.model.auxiliary_head.type == 'FCNHead'
    assert cfg.model.auxiliary_head.in_index == 2
    assert cfg.model.auxiliary_head.in_channels == channels[2]
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    assert cfg.model.auxiliary_head.norm_cfg.type == 'SyncBN'
    assert cfg.model.test_cfg == dict(
        mode='slide', crop_size=(512, 512), stride=(341, 341))
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size * 8 == 16
    crop = [t for t in cfg.train_pipeline if t.type == 'RandomCrop'][0]
    assert crop.crop_size == (512, 512)
    optim = cfg.optim_wrapper
    assert optim.optimizer == dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert optim.constructor == 'pelk_mm.LayerDecayOptimWrapperConstructor'
    assert optim.paramwise_cfg == dict(
        decay_rate=0.9,
        decay_type='stage_wise',
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.)})
    assert backbone.mixer_norm_cfg.type == 'SyncBN'
    (sparsity, ) = cfg.custom_hooks
    assert (sparsity.type, sparsity.sparse_init, sparsity.prune_rate,
            sparsity.prefix) == ('pelk_mm.DynamicSparsityHook', 'nonzero', 0.,
                                 'backbone.')
    assert (cfg.train_cfg.val_interval,
            cfg.default_hooks.checkpoint.interval) == (4000, 8000)
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', 1500)
    assert (poly.type, poly.power, poly.begin, poly.end) == ('PolyLR', 1.0,
                                                             1500, 160000)


def test_generator_is_deterministic_and_ade20k_shaped(tmp_path):
    first = generate_ade20k(str(tmp_path / 'a'), 3, 2, seed=7)
    second = generate_ade20k(str(tmp_path / 'b'), 3, 2, seed=7)
    other = generate_ade20k(str(tmp_path / 'c'), 3, 2, seed=8)
    for split, stem, count in (('training', 'ADE_train', 3), ('validation',
                                                              'ADE_val', 2)):
        names = sorted(os.listdir(osp.join(first, 'images', split)))
        assert names == [f'{stem}_{i:08d}.jpg' for i in range(1, count + 1)]
        for name in names:
            ann = osp.join('annotations', split, name[:-4] + '.png')
            for rel in (osp.join('images', split, name), ann):
                with open(osp.join(first, rel), 'rb') as a, \
                        open(osp.join(second, rel), 'rb') as b:
                    assert a.read() == b.read()
            label = np.asarray(Image.open(osp.join(first, ann)))
            assert label.dtype == np.uint8 and label.shape == (128, 160)
            assert set(np.unique(label)) <= set(SCENE_CLASSES) | {0}
    assert not np.array_equal(
        np.asarray(
            Image.open(
                osp.join(first, 'images/training', 'ADE_train_00000001.jpg'))),
        np.asarray(
            Image.open(
                osp.join(other, 'images/training', 'ADE_train_00000001.jpg'))))


def test_mmseg_reads_the_generated_dataset(tmp_path):
    from mmengine.registry import init_default_scope
    from mmseg.datasets import ADE20KDataset
    init_default_scope('mmseg')
    data_root = generate_ade20k(str(tmp_path), 4, 2)
    dataset = ADE20KDataset(
        data_root=data_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', reduce_zero_label=True)
        ])
    assert len(dataset) == 2
    sample = dataset[0]
    raw = np.asarray(Image.open(sample['seg_map_path']))
    seg = sample['gt_seg_map']
    assert np.all(seg[raw == 0] == 255)  # ADE20K's 0 is ignored
    assert np.all(seg[raw > 0] == raw[raw > 0] - 1)
    assert dataset.metainfo['classes'][2] == 'sky'  # label 3 in the files


def test_converted_classifier_weights_load_through_init_cfg(
        tmp_path, run_tool, run_tool_here, load_config):
    """cls_to_backbone.py output is what the config's init_cfg loads."""
    import torch
    from mmengine.registry import MODELS, init_default_scope

    from pelk_mm.models import PeLK
    source = PeLK(MINI_ARCH)
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(1000, MINI_ARCH['channels'][-1])
    torch.save({
        'state_dict': state,
        'meta': {
            'epoch': np.int64(300)
        }
    }, tmp_path / 'cls.pth')
    out = tmp_path / 'checkpoints' / 'backbone.pth'
    run_tool('tools/model_converters/cls_to_backbone.py',
             str(tmp_path / 'cls.pth'), str(out))
    again = run_tool_here(
        'tools/model_converters/cls_to_backbone.py',
        str(tmp_path / 'cls.pth'),
        str(out),
        check=False)
    assert again.returncode != 0 and 'exists' in again.stderr

    cfg = load_config('upernet_pelk_t_ade20k.py')
    init_cfg = cfg.model.backbone.init_cfg
    cfg.merge_from_dict(mini_overrides(cfg))
    cfg.model.backbone.init_cfg = dict(init_cfg, checkpoint=str(out))
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    loaded = model.backbone.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_missing_pretrained_stops_before_the_dataset(tmp_path, run_tool):
    proc = run_tool(
        'tools/train.py',
        'configs/upernet_pelk_t_ade20k.py',
        '--work-dir',
        str(tmp_path / 'work'),
        check=False)
    assert proc.returncode != 0
    assert "'checkpoints/pelk_t_in1k_backbone.pth'" in proc.stderr
    assert 'model.backbone.init_cfg=None' in proc.stderr
    assert 'cls_to_backbone.py' in proc.stderr
    assert 'ADEChallengeData2016' not in proc.stderr  # dataset not reached
    assert not (tmp_path / 'work').exists()


def test_missing_dataset_names_path_and_generator(tmp_path, run_tool_here):

    def refused(root):
        proc = train_demo(
            run_tool_here, tmp_path / 'work',
            *data_options(root, 'train_dataloader', 'val_dataloader'))
        assert proc.returncode != 0
        return proc.stderr

    root = tmp_path / 'nowhere' / 'ADEChallengeData2016'
    stderr = refused(root)
    assert f"'{root}'" in stderr
    assert f'generate_dataset.py ade20k {tmp_path / "nowhere"}' in stderr
    # A malformed root: the images are there, the annotations are not.
    (root / 'images' / 'training').mkdir(parents=True)
    (root / 'images' / 'training' / 'scene.jpg').write_bytes(b'')
    assert f"'{root / 'annotations' / 'training'}'" in refused(root)
    # Every folder there, no images in them.
    root = tmp_path / 'empty' / 'ADEChallengeData2016'
    for kind in ('images', 'annotations'):
        for split in ('training', 'validation'):
            (root / kind / split).mkdir(parents=True)
    assert f"'{root / 'images' / 'training'}', which is empty" in \
        refused(root)
    # Hidden files only (a file manager's): what the dataset skips.
    for kind in ('images', 'annotations'):
        for split in ('training', 'validation'):
            (root / kind / split / '.DS_Store').write_bytes(b'')
            (root / kind / split / '.thumbnails').mkdir()
            (root / kind / split / '.thumbnails' / 'a.jpg').write_bytes(b'')
    assert f"'{root / 'images' / 'training'}', which is empty (or holds " \
        'hidden files only)' in refused(root)


def test_new_run_refuses_a_work_dir_with_checkpoints(tmp_path, run_tool_here):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    earlier = work_dir / 'iter_8000.pth'
    earlier.write_bytes(b'weights of an earlier run')
    root = tmp_path / 'nowhere' / 'ADEChallengeData2016'
    options = data_options(root, 'train_dataloader', 'val_dataloader')
    proc = train_demo(run_tool_here, work_dir, *options)
    assert proc.returncode != 0
    assert 'iter_8000.pth' in proc.stderr
    assert '--resume' in proc.stderr and '--force' in proc.stderr
    assert earlier.read_bytes() == b'weights of an earlier run'
    (work_dir / 'last_checkpoint').write_text(str(earlier))
    # --force goes past it (to the next check: the missing dataset), the
    # earlier run's files moved aside: neither overwritten nor resumed.
    proc = run_tool_here(
        'tools/train.py',
        DEMO,
        '--work-dir',
        str(work_dir),
        '--force',
        '--cfg-options',
        *options,
        check=False)
    assert proc.returncode != 0 and f"'{root}'" in proc.stderr
    kept, = work_dir.glob('earlier_run_*')
    assert sorted(p.name for p in kept.iterdir()) == [
        'iter_8000.pth', 'last_checkpoint'
    ]
    assert (kept / 'iter_8000.pth').read_bytes() == \
        b'weights of an earlier run'
    assert not list(work_dir.glob('*.pth'))
    assert f"moved the earlier run's checkpoints to {kept} (iter_8000.pth, " \
        'last_checkpoint)' in proc.stdout + proc.stderr


def test_a_second_run_into_a_work_dir_in_use_is_refused(
        seg_config, tmp_path, run_tool_here):
    """A run holds its work dir: another started into it (here while a
    process holds it) is refused, naming that process."""
    work_dir = tmp_path / 'work'
    holder = subprocess.Popen([
        sys.executable, '-c',
        'import sys, time; from pelk_mm.runtime import lock_work_dir; '
        'lock_work_dir(sys.argv[1]); print("held", flush=True); '
        'time.sleep(60)',
        str(work_dir)
    ],
                              stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        proc = train_demo(
            run_tool_here,
            work_dir,
            'train_cfg.max_iters=1',
            *FAST,
            config=seg_config)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert f'the work dir {work_dir} is in use by another run (pid ' \
        f'{holder.pid} on ' in proc.stderr
    assert 'give this run another --work-dir' in proc.stderr


@pytest.mark.slow
def test_resuming_a_run_of_another_model_is_refused_saying_what_to_do(
        trained_segmentor, tmp_path, run_tool_here):
    """--resume with a config whose model and optimizer groups differ from
    the run's (here: a deeper stage, layer-wise decay): torch's "different
    number of parameter groups" becomes what to do."""
    saved = trained_segmentor.checkpoint
    proc = run_tool_here(
        'tools/train.py',
        trained_segmentor.config,
        '--work-dir',
        tmp_path / 'work',
        '--resume',
        saved,
        '--cfg-options',
        f'train_cfg.max_iters={SEG_ITERS + 1}',
        'model.backbone.arch.depths=[1,1,2,1]',
        'optim_wrapper.paramwise_cfg.decay_type=layer_wise',
        *FAST,
        check=False)
    assert proc.returncode != 0
    assert f'cannot resume from {saved}: it was saved by a run of another ' \
        'model or optimizer settings' in proc.stderr
    assert 'load_from=CHECKPOINT' in proc.stderr


def test_amp_without_gpu_is_refused(tmp_path, run_tool_here):
    proc = run_tool_here(
        'tools/train.py',
        DEMO,
        '--amp',
        '--work-dir',
        str(tmp_path),
        '--cfg-options',
        'model.backbone.arch=t',
        check=False)
    assert proc.returncode != 0 and '--amp needs a GPU' in proc.stderr


# ---------------------------------------------------------------- end to end
# On the demo config with a reduced PeLK (conftest.MINI_ARCH), trained once
# for all these tests in the test process (conftest.trained_segmentor).

# Quicker iterations for the tests that check tools, not learning.
FAST = [
    'train_dataloader.batch_size=2',
    'train_dataloader.dataset.pipeline.3.crop_size=(64,64)',
    'model.data_preprocessor.size=(64,64)', 'model.test_cfg.crop_size=(64,64)',
    'model.test_cfg.stride=(43,43)'
]


def miou(log):
    values = re.findall(r'mIoU: ([\d.]+)', log)
    assert values, log[-2000:]
    return float(values[-1])


def losses(log):
    """{iteration: every logged loss term, as printed} of a training log."""
    return {
        int(i): re.findall(r'loss\w*: ([\d.]+)', rest)
        for i, rest in re.findall(r'Iter\(train\) \[\s*(\d+)/\d+\](.*)', log)
    }


def test_test_tool_refuses_a_checkpoint_that_does_not_fit(
        seg_config, tmp_path, run_tool_here):
    import torch
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    model = MODELS.build(Config.fromfile(seg_config).model)
    state = model.state_dict()
    params = len([k for k in state if not k.endswith('num_batches_tracked')])
    renamed = tmp_path / 'renamed.pth'  # keys of another wrapper
    torch.save({'state_dict': {
        f'model.{k}': v
        for k, v in state.items()
    }}, renamed)
    proc = run_tool_here(
        'tools/test.py',
        seg_config,
        renamed,
        '--work-dir',
        tmp_path / 'work',
        check=False)
    assert proc.returncode != 0
    assert f"'{renamed}' does not fit the model: it leaves {params} of " \
        f'its {params} weights and buffers unloaded' in proc.stderr
    assert "keys look like model." in proc.stderr
    assert '--allow-missing' in proc.stderr
    assert not re.search(r'mIoU: [\d.]+', proc.stdout + proc.stderr)

    # What mmengine loads with a warning and evaluates at exit code 0: a
    # head of another number of classes (151 here), a NaN weight (the other
    # cases and the options: test_runtime/test_checkpoint_fit.py).
    def refused(name, **changes):
        path = tmp_path / f'{name}.pth'
        torch.save({'state_dict': {**state, **changes}}, path)
        proc = run_tool_here('tools/test.py', seg_config, path, check=False)
        assert proc.returncode != 0 and f'{name}.pth' in proc.stderr
        assert not re.search(r'mIoU: [\d.]+', proc.stdout + proc.stderr)
        return proc.stderr

    channels = state['decode_head.conv_seg.weight'].shape[1]
    assert f'decode_head.conv_seg.weight: (151, {channels}, 1, 1) in the ' \
        f'file, (150, {channels}, 1, 1) in the model' in refused(
            'classes151', **{
                'decode_head.conv_seg.weight': torch.zeros(
                    151, channels, 1, 1),
                'decode_head.conv_seg.bias': torch.zeros(151)
            })
    nan = torch.full_like(state['decode_head.conv_seg.bias'], float('nan'))
    assert 'NaN or infinite values in 1 tensors (e.g. decode_head.conv_seg.' \
        'bias)' in refused('nan', **{'decode_head.conv_seg.bias': nan})

    # Fine-tuning from the renamed file (load_from) is refused the same way.
    proc = train_demo(
        run_tool_here,
        tmp_path / 'train',
        f'load_from={renamed}',
        'train_cfg.max_iters=1',
        *FAST,
        config=seg_config)
    assert proc.returncode != 0
    assert f"'{renamed}' does not fit the model: it leaves {params} of " \
        f'its {params} weights and buffers unloaded' in proc.stderr
    assert 'pass --allow-missing to fine-tune' in proc.stderr
    assert 'Iter(train)' not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_labels_outside_the_classes_are_refused_naming_the_file(
        ade, tmp_path, run_tool_here, mini_config):
    """The first row of one validation annotation and every other row of each
    training one hold 200 (of 150 classes; in every random crop): evaluation
    and training stop naming the file and the value."""
    import shutil

    import torch
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    data = tmp_path / 'ade'
    shutil.copytree(ade, data)
    annotations = data / 'annotations'
    bad_val = sorted((annotations / 'validation').glob('*.png'))[3]
    for path, rows in [(bad_val, slice(0, 1)),
                       *((path, slice(None, None, 2))
                         for path in (annotations / 'training').glob('*.png'))
                       ]:
        labels = np.array(Image.open(path))
        labels[rows] = 200
        Image.fromarray(labels).save(path)
    config = mini_config(tmp_path / 'config.py', DEMO, **data_roots(data))

    register_all_modules()
    checkpoint = tmp_path / 'model.pth'
    torch.save(
        {
            'state_dict': MODELS.build(
                Config.fromfile(config).model).state_dict()
        }, checkpoint)
    proc = run_tool_here(
        'tools/test.py',
        config,
        checkpoint,
        '--work-dir',
        tmp_path / 'test',
        check=False)
    assert proc.returncode != 0
    assert f'annotation {bad_val} holds label values [200] outside the ' \
        "dataset's 150 classes (valid values in the file: 1..150" \
        in proc.stderr
    assert not re.search(r'mIoU: [\d.]+', proc.stdout + proc.stderr)

    proc = train_demo(
        run_tool_here,
        tmp_path / 'train',
        'train_cfg.max_iters=1',
        *FAST,
        config=config)
    assert proc.returncode != 0
    assert re.search(
        r'annotation \S+/training/\S+\.png holds label values '
        r'\[200\]', proc.stderr)


@pytest.mark.slow
def test_demo_learns(trained_segmentor):
    # 8 classes in the scenes; a constant or random guess scores < 10 mIoU.
    # Measured after these 60 iterations (the PeLK reduced) on a 2-core
    # x86 machine, randomness.seed 0-2: 42.5, 52.3, 44.4 (the first logged
    # losses 6.5-7.0, the last 2.8-3.4); with the full PeLK-T, seeds 0-2:
    # 58.7, 48.2, 56.4. The bound is 2/3 of the worst.
    assert trained_segmentor.metrics[-1]['mIoU'] > 28.0
    assert osp.isfile(trained_segmentor.checkpoint)
    start, end = trained_segmentor.losses[:5], trained_segmentor.losses[-5:]
    assert sum(end) < 0.7 * sum(start)


@pytest.mark.slow
def test_test_tool_evaluates_and_draws(trained_segmentor, tmp_path, run_tool):
    """tools/test.py in its own process: the mIoU of the validation at the
    end of training, and a picture per image."""
    show_dir = tmp_path / 'shown'
    proc = run_tool('tools/test.py', trained_segmentor.config,
                    trained_segmentor.checkpoint, '--work-dir',
                    str(tmp_path / 'test'), '--show-dir', str(show_dir))
    assert miou(proc.stdout + proc.stderr) == pytest.approx(
        trained_segmentor.metrics[-1]['mIoU'], abs=0.01)
    drawn = sorted(os.listdir(show_dir / 'vis_data' / 'vis_image'))
    assert len(drawn) == 16
    image = Image.open(show_dir / 'vis_data' / 'vis_image' / drawn[0])
    assert image.size == (320, 128)  # ground truth | prediction


@pytest.mark.slow
def test_tta_multi_scale_flip(trained_segmentor, tmp_path, run_tool_here):
    proc = run_tool_here('tools/test.py', trained_segmentor.config,
                         trained_segmentor.checkpoint, '--tta', '--work-dir',
                         tmp_path, '--cfg-options',
                         'test_dataloader.dataset.indices=4')
    log = proc.stdout + proc.stderr
    assert 'SegTTAModel' in log
    assert miou(log) > 0


@pytest.mark.slow
def test_test_tool_takes_the_config_a_resumed_run_saved(
        trained_segmentor, tmp_path, run_tool_here):
    """A resumed run saves ``resume = True`` in its config: evaluating a
    checkpoint with that config does not try to resume a training loop."""
    proc = run_tool_here('tools/test.py', trained_segmentor.config,
                         trained_segmentor.checkpoint, '--work-dir', tmp_path,
                         '--cfg-options', 'resume=True',
                         'test_dataloader.dataset.indices=2')
    assert miou(proc.stdout + proc.stderr) >= 0


@pytest.mark.slow
def test_mmseg_own_tools_run_our_configs(trained_segmentor, tmp_path,
                                         run_tool):
    config = trained_segmentor.config
    proc = run_tool(
        osp.join(MMSEG_TOOLS, 'test.py'), config, trained_segmentor.checkpoint,
        '--work-dir', str(tmp_path / 'test'), '--cfg-options',
        'test_dataloader.dataset.indices=4')
    assert miou(proc.stdout + proc.stderr) > 0
    run_tool(
        osp.join(MMSEG_TOOLS, 'train.py'), config, '--work-dir',
        str(tmp_path / 'train'), '--cfg-options', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=2', 'val_dataloader.dataset.indices=2', *FAST)
    assert (tmp_path / 'train' / 'iter_2.pth').is_file()


@pytest.mark.slow
def test_interrupted_training_resumes(seg_config, tmp_path, run_tool_here):
    """A run killed (SIGKILL) in iteration 3 resumes from its iteration 2
    checkpoint with --resume, and goes on with the losses of a run that
    was not interrupted."""
    work_dir = tmp_path / 'work'
    args = [
        'tools/train.py', seg_config, '--work-dir',
        str(work_dir), '--cfg-options', 'train_cfg.max_iters=6',
        'train_cfg.val_interval=100', 'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=5', *FAST
    ]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, *args],
                            cwd=REPO,
                            env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = work_dir / 'last_checkpoint'
    deadline = time.time() + 600
    while not (last.is_file() and 'iter_2' in last.read_text()):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # interrupted in iteration 3
    proc.wait()
    assert not (work_dir / 'iter_6.pth').exists()

    resumed = run_tool_here(*args, '--resume')
    log = resumed.stdout + resumed.stderr
    assert 'resumed' in log.lower() and 'iter_2.pth' in log
    assert list(losses(log)) == [3, 4, 5, 6]
    assert (work_dir / 'iter_6.pth').is_file()

    # Seeded and deterministic, the resumed run draws the same random numbers
    # (drop path, data augmentation) as a run that was not interrupted.
    args[args.index(str(work_dir))] = str(tmp_path / 'uninterrupted')
    uninterrupted = run_tool_here(*args)
    expected = losses(uninterrupted.stdout + uninterrupted.stderr)
    assert losses(log) == {i: expected[i] for i in (3, 4, 5, 6)}


@pytest.mark.slow
def test_mmengine_compile_trains_the_demo(seg_config, tmp_path, run_tool):
    """``compile=True`` (mmengine compiles train_step with inductor) trains
    the demo: 20 iterations, the loss going down. In a process of its own:
    a fault in inductor's generated code would end this one. A constant
    learning rate and no flips: the compiled train_step holds the optimizer
    step and the data preprocessor, and dynamo would recompile them for
    each new lr and flip (a minute on 2 cores). The heads lighter (no
    auxiliary head, one pooling scale): compiling takes time in proportion
    to the graph's ops (130 s with both heads on a cold cache, 107 s so)."""
    work_dir = tmp_path / 'work'
    proc = run_tool('tools/train.py', seg_config, '--work-dir', str(work_dir),
                    '--cfg-options', 'compile=True', 'train_cfg.max_iters=20',
                    'model.auxiliary_head=None',
                    'model.decode_head.pool_scales=(1,)',
                    'train_cfg.val_interval=20',
                    'default_hooks.checkpoint.interval=20',
                    'default_hooks.logger.interval=5', 'param_scheduler=[]',
                    'train_dataloader.dataset.pipeline.4.prob=0.0',
                    'val_dataloader.dataset.indices=2', *FAST)
    log = proc.stdout + proc.stderr
    assert 'Model has been "compiled"' in log
    logged = losses(log)
    assert sorted(logged) == [5, 10, 15, 20], log[-3000:]
    total = [float(terms[0]) for _, terms in sorted(logged.items())]
    assert total[-1] < total[0]
    assert (work_dir / 'iter_20.pth').is_file()


@pytest.mark.slow
def test_two_process_gloo_training(seg_config, tmp_path, free_port):
    env = dict(os.environ, OMP_NUM_THREADS='1', PORT=str(free_port))
    proc = subprocess.run([
        'bash', 'tools/dist_train.sh', seg_config, '2', '--work-dir',
        str(tmp_path), '--cfg-options', 'train_cfg.max_iters=4',
        'train_cfg.val_interval=4', 'default_hooks.logger.interval=1',
        'val_dataloader.dataset.indices=4', *FAST
    ],
                          cwd=REPO,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert re.search(r'Iter\(train\) \[4/4\]', log)
    assert (tmp_path / 'iter_4.pth').is_file()


@pytest.mark.slow
def test_recipe_keeps_the_zeros_of_a_sparse_backbone(ade, tmp_path,
                                                     run_tool_here,
                                                     mini_config):
    """The real UperNet-PeLK-T recipe (its sparsity hook, SyncBN, layer
    decay; PeLK reduced, 64 crops, 3 iterations) from a 40%-sparse backbone
    file, as SLaK's sparse=True backbones: every zero conv and linear weight
    stays zero, the others train."""
    import torch

    from pelk_mm.models import PeLK, sparse_weights
    torch.manual_seed(0)
    backbone = PeLK(MINI_ARCH, out_indices=(0, 1, 2, 3))
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    zeros = {}
    for key in sparse_weights(backbone):
        value = state[f'backbone.{key}']
        zeros[f'backbone.{key}'] = torch.rand(value.shape) < 0.4
        value[zeros[f'backbone.{key}']] = 0
    backbone_file = tmp_path / 'sparse_backbone.pth'
    torch.save({'state_dict': state}, backbone_file)
    config = mini_config(
        tmp_path / 'config.py',
        'upernet_pelk_t_ade20k.py',
        model=dict(
            backbone=dict(
                init_cfg=dict(
                    _delete_=True,
                    type='Pretrained',
                    checkpoint=str(backbone_file),
                    prefix='backbone.'))),
        # No validation (mmengine's iteration loop validates at the end).
        options=dict(val_dataloader=None, val_cfg=None, val_evaluator=None),
        **data_roots(ade))
    run_tool_here('tools/train.py', config, '--work-dir', tmp_path / 'work',
                  '--cfg-options', 'train_cfg.max_iters=3',
                  'default_hooks.checkpoint.interval=3',
                  'param_scheduler.0.end=2', 'train_dataloader.num_workers=0',
                  'train_dataloader.persistent_workers=False', *FAST)
    tuned = torch.load(
        tmp_path / 'work' / 'iter_3.pth', weights_only=False)['state_dict']
    for key, zero in zeros.items():
        assert torch.all(tuned[key][zero] == 0), key
        assert not torch.equal(tuned[key][~zero], state[key][~zero]), key


@pytest.mark.slow
def test_curves_of_the_demo_run(trained_segmentor, run_tool_here, tmp_path):
    """plot_curves.py reads what mmengine wrote during the demo run."""
    proc = run_tool_here('tools/analysis/plot_curves.py',
                         trained_segmentor.work_dir, '--out',
                         tmp_path / 'curves.png')
    summary = proc.stdout + proc.stderr
    found = re.search(
        rf'loss ([\d.]+) at iteration {SEG_ITERS}; mIoU ([\d.]+) at '
        rf'iteration {SEG_ITERS}', summary)
    assert found, summary
    assert float(found[2]) == pytest.approx(
        trained_segmentor.metrics[-1]['mIoU'], abs=0.01)
    assert (tmp_path / 'curves.png').stat().st_size > 10000


@pytest.mark.slow
def test_reparameterized_checkpoint_gives_the_same_metrics(
        trained_segmentor, tmp_path, run_tool_here):
    """tools/model_converters/reparameterize.py, then tools/test.py with
    model.backbone.deploy=True: the metrics of the original checkpoint."""
    config, checkpoint = trained_segmentor.config, trained_segmentor.checkpoint
    deployed = tmp_path / 'deployed.pth'
    proc = run_tool_here('tools/model_converters/reparameterize.py', config,
                         checkpoint, deployed)
    log = proc.stdout + proc.stderr
    found = re.search(r'differ by at most ([\d.e+-]+)', log)
    assert found and float(found[1]) < 1e-5, log
    proc = run_tool_here('tools/test.py', config, deployed, '--work-dir',
                         tmp_path / 'test', '--cfg-options',
                         'model.backbone.deploy=True')
    metrics = re.findall(r'aAcc: ([\d.]+) +mIoU: ([\d.]+) +mAcc: ([\d.]+)',
                         proc.stdout + proc.stderr)
    trained = trained_segmentor.metrics[-1]
    assert metrics and [float(v) for v in metrics[-1]] == pytest.approx(
        [trained[k] for k in ('aAcc', 'mIoU', 'mAcc')], abs=0.005)
    # Refused: an existing output; a deployed checkpoint as the source.
    proc = run_tool_here(
        'tools/model_converters/reparameterize.py',
        config,
        checkpoint,
        deployed,
        check=False)
    assert proc.returncode != 0 and 'exists' in proc.stderr
    proc = run_tool_here(
        'tools/model_converters/reparameterize.py',
        config,
        deployed,
        tmp_path / 'again.pth',
        check=False)
    assert proc.returncode != 0 and 'does not fit the model' in proc.stderr


@pytest.mark.slow
def test_inferencers_run_the_demo_checkpoint_on_a_photo(
        trained_segmentor, photo, tmp_path):
    """MMSegInferencer and init_model/inference_model take the config and
    the checkpoint as they are, and agree."""
    from mmseg.apis import MMSegInferencer, inference_model, init_model
    config, checkpoint = trained_segmentor.config, trained_segmentor.checkpoint
    model = init_model(config, checkpoint, device='cpu')
    expected = inference_model(model, photo).pred_sem_seg.data[0].numpy()
    assert expected.shape == (600, 512)  # the photo's size
    # Class indices (ADE20K ids - 1); trained on the synthetic scenes, the
    # model predicts their classes only.
    assert set(np.unique(expected)) <= {i - 1 for i in SCENE_CLASSES}
    inferencer = MMSegInferencer(
        model=config, weights=checkpoint, device='cpu')
    out = inferencer(photo, out_dir=str(tmp_path))
    np.testing.assert_array_equal(out['predictions'], expected)
    drawn = list((tmp_path / 'vis').iterdir())
    assert len(drawn) == 1 and drawn[0].stat().st_size > 10000


@pytest.mark.gpu
@pytest.mark.slow
def test_demo_trains_with_amp_on_the_gpu(seg_config, tmp_path, run_tool):
    """One training iteration of the demo config in mixed precision on
    CUDA (tools/train.py --amp: mmengine's AmpOptimWrapper)."""
    proc = run_tool('tools/train.py', seg_config, '--amp', '--work-dir',
                    str(tmp_path / 'work'), '--cfg-options',
                    'train_cfg.max_iters=1', 'train_cfg.val_interval=1000',
                    'default_hooks.checkpoint.interval=1',
                    'default_hooks.logger.interval=1', *FAST)
    log = proc.stdout + proc.stderr
    assert 'AmpOptimWrapper' in log or 'loss_scale' in log
    losses = [float(v) for v in re.findall(r' loss: ([\d.e+-]+|nan)', log)]
    assert losses and all(np.isfinite(losses)), log[-2000:]
    assert (tmp_path / 'work' / 'iter_1.pth').exists()
