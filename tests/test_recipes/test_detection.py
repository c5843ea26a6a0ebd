"""Cascade Mask R-CNN-PeLK on COCO: configs, counts, data, tools, e2e."""
import json
import os.path as osp
import re

import numpy as np
import pytest
from conftest import metafile_models

from pelk_mm.synthetic import SHAPE_CLASSES, generate_coco

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'configs', 'demo',
                'cascade_mask_rcnn_pelk_t_coco_demo.py')
# Where mmdet is not installed (a GPU machine with mmcv-lite), these tests
# skip.
MMDET_TOOLS = osp.join(
    osp.dirname(pytest.importorskip('mmdet').__file__), '.mim', 'tools')


def data_options(root, *loaders):
    options = []
    for loader in loaders:
        options.append(f'{loader}.dataset.data_root={root}/')
    if 'val_dataloader' in loaders or 'test_dataloader' in loaders:
        ann = f'{root}/annotations/instances_val2017.json'
        options += [
            f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}'
        ]
    return options


# (drop path, layer-wise decay rate) of the paper's COCO recipe (SLaK's and
# ConvNeXt's) for each of its archs.
PAPER_SETTINGS = {
    'tiny': (0.4, 0.7),
    'small': (0.6, 0.7),
    'base': (0.7, 0.8),
    'base-101': (0.7, 0.8)
}
INDEXED = metafile_models('detection')


@pytest.mark.parametrize('indexed', INDEXED, ids=[m['Name'] for m in INDEXED])
def test_configs_follow_the_paper_recipe(indexed, load_config):
    """Every config of the model index: the paper's recipe, its neck as
    wide as its arch's stages."""
    from pelk_mm.models import PeLK
    cfg = load_config(osp.relpath(indexed['Config'], 'configs'))
    assert cfg.custom_imports.imports == ['pelk_mm']
    assert cfg.default_scope == 'mmdet'
    assert cfg.model.type == 'CascadeRCNN'
    backbone = cfg.model.backbone
    assert backbone.type == 'pelk_mm.PeLK'
    channels = PeLK.arch_settings[backbone.arch]['channels']
    drop_path, decay = PAPER_SETTINGS.get(
        backbone.arch,
        (backbone.drop_path_rate, cfg.optim_wrapper.paramwise_cfg.decay_rate))
    assert backbone.drop_path_rate == drop_path
    assert backbone.init_cfg.type == 'Pretrained'
    assert backbone.init_cfg.prefix == 'backbone.'
    assert cfg.model.neck.type == 'FPN'
    assert cfg.model.neck.in_channels == channels
    heads = cfg.model.roi_head.bbox_head
    assert len(heads) == 3
    for head in heads:
        assert head.type == 'ConvFCBBoxHead'
        assert (head.num_shared_convs, head.num_shared_fcs) == (4, 1)
        assert head.norm_cfg.type == 'SyncBN'
        assert head.loss_bbox.type == 'GIoULoss' and head.reg_decoded_bbox
        assert head.num_classes == 80
    assert cfg.model.roi_head.mask_head.num_classes == 80
    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.by_epoch is False
    assert steps.type == 'MultiStepLR' and steps.milestones == [27, 33]
    assert cfg.train_dataloader.batch_size * 8 == 16
    optim = cfg.optim_wrapper
    assert optim.optimizer == dict(
        type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert optim.constructor == 'pelk_mm.LayerDecayOptimWrapperConstructor'
    assert optim.paramwise_cfg == dict(
        decay_rate=decay,
        decay_type='layer_wise',
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.)})
    assert (warmup.start_factor, warmup.end) == (0.001, 500)
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)
    assert backbone.mixer_norm_cfg.type == 'SyncBN'
    (sparsity, ) = cfg.custom_hooks
    assert (sparsity.type, sparsity.sparse_init, sparsity.prune_rate,
            sparsity.prefix) == ('pelk_mm.DynamicSparsityHook', 'nonzero', 0.,
                                 'backbone.')
    choice = [t for t in cfg.train_pipeline if t.type == 'RandomChoice'][0]
    multi_scale, crop = choice.transforms
    assert [s[0] for s in multi_scale[0].scales] == list(range(480, 801, 32))
    assert crop[1].type == 'RandomCrop'
    assert cfg.val_evaluator.metric == ['bbox', 'segm']


def test_generator_is_deterministic_and_coco_shaped(tmp_path):
    from pycocotools.coco import COCO
    first = generate_coco(str(tmp_path / 'a'), 6, 3, seed=3)
    second = generate_coco(str(tmp_path / 'b'), 6, 3, seed=3)
    for split, count in (('train2017', 6), ('val2017', 3)):
        ann_file = f'annotations/instances_{split}.json'
        with open(osp.join(first, ann_file)) as a, \
                open(osp.join(second, ann_file)) as b:
            assert json.load(a) == json.load(b)
        coco = COCO(osp.join(first, ann_file))
        assert len(coco.imgs) == count
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == \
            [name for name, _ in SHAPE_CLASSES.values()]
        for image in coco.imgs.values():
            path = osp.join(first, split, image['file_name'])
            with open(path, 'rb') as f, open(
                    osp.join(second, split, image['file_name']), 'rb') as g:
                assert f.read() == g.read()
            occupied = np.zeros((image['height'], image['width']), int)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image['id'])):
                mask = coco.annToMask(ann)
                occupied += mask
                points = np.asarray(ann['segmentation'][0]).reshape(-1, 2)
                x, y, w, h = ann['bbox']
                assert np.allclose([x, y, x + w, y + h],
                                   [*points.min(0), *points.max(0)],
                                   atol=0.02)
                ys, xs = np.nonzero(mask)  # the mask lies in the box
                assert xs.min() >= x - 1 and xs.max() <= x + w + 1
                assert ys.min() >= y - 1 and ys.max() <= y + h + 1
                assert abs(ann['area'] / mask.sum() - 1) < 0.15
            assert occupied.max() <= 1  # objects do not overlap


def test_mmdet_reads_the_generated_dataset(tmp_path):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    root = generate_coco(str(tmp_path), 4, 2)
    dataset = CocoDataset(
        data_root=root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        metainfo=dict(classes=('disc', 'square', 'triangle')),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True)
        ])
    assert len(dataset) == 4
    sample = dataset[0]
    assert sample['img'].shape == (120, 150, 3)  # not multiples of 32
    assert len(sample['gt_bboxes']) == len(sample['gt_masks']) >= 1


def test_missing_annotations_name_path_and_generator(tmp_path, run_tool_here):
    root = tmp_path / 'coco'
    (root / 'train2017').mkdir(parents=True)
    (root / 'train2017' / '000000000001.jpg').write_bytes(b'')
    proc = run_tool_here(
        'tools/train.py',
        DEMO,
        '--work-dir',
        str(tmp_path / 'work'),
        '--cfg-options',
        *data_options(root, 'train_dataloader', 'val_dataloader'),
        check=False)
    assert proc.returncode != 0
    assert f"'{root}/annotations/instances_train2017.json'" in proc.stderr
    assert f'generate_dataset.py coco {root}/' in proc.stderr


# ---------------------------------------------------------------- end to end
# On the demo config with a reduced PeLK (conftest.MINI_ARCH), trained once
# for all these tests in the test process (conftest.trained_detector).


def coco_ap(log, kind, suffix=''):
    values = re.findall(rf'coco/{kind}_mAP{suffix}: ([\d.]+)', log)
    assert values, log[-2000:]
    return float(values[-1])


@pytest.mark.slow
def test_demo_learns_boxes_and_masks(trained_detector):
    # 8 epochs from scratch on a 2-core x86 machine (box AP / AP50, mask
    # AP / AP50), the PeLK reduced, the FPN, RoI features and RoI heads'
    # convs 32 wide (DET_WIDTH), randomness.seed 0: 0.027 / 0.131, 0.019 /
    # 0.112; seed 1: 0.022 / 0.074, 0.019 / 0.084. The heads' convs 64
    # wide, the rest 32, seed 0: 0.035 / 0.138, 0.018 / 0.085. All 64 wide,
    # seed 0: 0.046 / 0.129, 0.033 / 0.095; seed 1: 0.013 / 0.047, 0.010 /
    # 0.038; seed 0 at batch 2: 0.026 / 0.138, 0.012 / 0.066; after 4
    # epochs: 0.002 / 0.007, 0.001 / 0.007. The full-size demo after 12
    # epochs: 0.073 / 0.218, 0.056 / 0.183. The untrained detector scores
    # 0.000. The bounds, those of the full-size demo, are below every value
    # measured.
    metrics = trained_detector.metrics[-1]
    assert metrics['coco/bbox_mAP'] > 0.005
    assert metrics['coco/bbox_mAP_50'] > 0.03
    assert metrics['coco/segm_mAP'] > 0.005
    assert metrics['coco/segm_mAP_50'] > 0.03
    losses = trained_detector.losses  # 30 iterations an epoch
    assert sum(losses[-30:]) / 30 < 0.85 * sum(losses[:10]) / 10


@pytest.mark.slow
def test_test_tools_evaluate_the_checkpoint(trained_detector, tmp_path,
                                            run_tool, run_tool_here):
    config, checkpoint = trained_detector.config, trained_detector.checkpoint
    metrics = trained_detector.metrics[-1]
    ours = run_tool_here('tools/test.py', config, checkpoint, '--work-dir',
                         tmp_path / 'ours')
    assert coco_ap(ours.stdout + ours.stderr, 'bbox') == pytest.approx(
        metrics['coco/bbox_mAP'], abs=1e-3)
    theirs = run_tool(
        osp.join(MMDET_TOOLS, 'test.py'), config, checkpoint, '--work-dir',
        str(tmp_path / 'theirs'))
    assert coco_ap(theirs.stdout + theirs.stderr, 'segm') == pytest.approx(
        metrics['coco/segm_mAP'], abs=1e-3)


@pytest.fixture(scope='module')
def known_detector(det_config, tmp_path_factory):
    """A checkpoint of the (reduced) demo detector whose outputs are known:
    every cascade stage calls each RoI a 'square' with certainty and keeps
    its box, and the mask head fills the box. The RPN gives proposals
    whatever its weights, so the tools must find and draw squares at score
    1.00."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.runner import save_checkpoint
    register_all_modules()
    torch.manual_seed(0)
    cfg = Config.fromfile(det_config)
    model = MODELS.build(cfg.model)
    square = cfg.metainfo['classes'].index('square')
    with torch.no_grad():
        for head in model.roi_head.bbox_head:
            head.fc_cls.weight.zero_()
            head.fc_cls.bias.zero_()
            head.fc_cls.bias[square] = 20.
            head.fc_reg.weight.zero_()
            head.fc_reg.bias.zero_()
        for head in model.roi_head.mask_head:
            head.conv_logits.weight.zero_()
            head.conv_logits.bias.fill_(20.)
    path = str(tmp_path_factory.mktemp('known') / 'squares.pth')
    save_checkpoint(model.state_dict(), path)
    return path


def test_image_demo_names_the_configs_it_takes(tmp_path, photo, run_tool_here):
    checkpoint = tmp_path / 'segmentor.pth'
    checkpoint.write_bytes(b'')
    proc = run_tool_here(
        'tools/image_demo.py',
        photo,
        'configs/demo/upernet_pelk_t_ade20k_demo.py',
        str(checkpoint),
        check=False)
    assert proc.returncode != 0
    assert 'config of mmseg, not of mmdet' in proc.stderr
    assert 'tools/test.py CONFIG CHECKPOINT --show-dir' in proc.stderr


def test_image_demo_writes_over_nothing_unless_told(tmp_path, photo,
                                                    run_tool_here):
    """An existing --out-file is refused before the model is built (the
    checkpoint here is no checkpoint at all), and so is the input image."""
    checkpoint = tmp_path / 'detector.pth'
    checkpoint.write_bytes(b'')
    drawn = tmp_path / 'drawn.png'
    drawn.write_bytes(b'an earlier drawing')
    for out, message in [
        (drawn, f'--out-file {drawn} exists: pass --overwrite to replace it'),
        (photo, f'--out-file {photo} is the input {photo}: writing it would '
         'destroy the input'),
    ]:
        proc = run_tool_here(
            'tools/image_demo.py',
            photo,
            DEMO,
            str(checkpoint),
            '--out-file',
            str(out),
            '--overwrite' if out == photo else '--score-thr=0.3',
            check=False)
        assert proc.returncode != 0
        assert message in proc.stderr, proc.stderr[-2000:]
    assert drawn.read_bytes() == b'an earlier drawing'


@pytest.mark.slow
def test_image_demo_draws_boxes_and_masks(known_detector, det_config, coco,
                                          tmp_path, run_tool):
    from PIL import Image
    image = osp.join(coco, 'val2017', '000000000001.jpg')
    out = tmp_path / 'drawn.png'
    proc = run_tool('tools/image_demo.py', image, det_config, known_detector,
                    '--out-file', str(out), '--score-thr', '0.5')
    log = proc.stdout + proc.stderr
    found = re.search(r'(\d+) detections with score >= 0.5: (.*); drawn', log)
    assert found and int(found[1]) >= 1, log
    detections = re.findall(
        r'(\w+) ([\d.]+) at \[(\d+), (\d+), (\d+), (\d+)\]', found[2])
    assert len(detections) == int(found[1])
    assert {(name, score)
            for name, score, *_ in detections} == {('square', '1.00')}
    drawn = np.asarray(Image.open(out).convert('RGB')).astype(int)
    source = np.asarray(Image.open(image).convert('RGB')).astype(int)
    assert drawn.shape == source.shape
    # Every box is drawn filled by its mask (mmdet blends it at alpha 0.8);
    # boxes on the image's edge may have no pixel inside.
    boxes = [tuple(map(int, found[2:])) for found in detections]
    inside = [(x1, y1, x2, y2) for x1, y1, x2, y2 in boxes
              if x2 > x1 and y2 > y1]
    assert inside, boxes
    for x1, y1, x2, y2 in inside:
        change = np.abs(drawn[y1:y2, x1:x2] - source[y1:y2, x1:x2])
        assert change.mean() > 10, (x1, y1, x2, y2)


@pytest.mark.slow
def test_mmdet_train_tool_and_resume(det_config, tmp_path, run_tool,
                                     run_tool_here):
    """mmdet's own train.py runs the demo config; a run of ours resumes at
    the next epoch."""
    small = [
        'train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=2',
        'train_cfg.val_interval=10', 'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=5',
        'default_hooks.logger.interval=1'
    ]
    run_tool(
        osp.join(MMDET_TOOLS, 'train.py'), det_config, '--work-dir',
        str(tmp_path / 'theirs'), '--cfg-options', 'train_cfg.max_epochs=1',
        *small)
    assert (tmp_path / 'theirs' / 'epoch_1.pth').is_file()

    work_dir = tmp_path / 'ours'
    args = ['tools/train.py', det_config, '--work-dir', work_dir]
    run_tool_here(*args, '--cfg-options', 'train_cfg.max_epochs=1', *small)
    assert (work_dir / 'epoch_1.pth').is_file()
    resumed = run_tool_here(*args, '--resume', '--cfg-options',
                            'train_cfg.max_epochs=3', *small)
    log = resumed.stdout + resumed.stderr
    assert 'resumed' in log.lower() and 'epoch_1.pth' in log
    epochs = {int(e) for e in re.findall(r'Epoch\(train\) \[(\d+)\]', log)}
    assert epochs == {2, 3}
    assert (work_dir / 'epoch_3.pth').is_file()


def test_inferencers_run_a_known_detector_on_a_photo(known_detector,
                                                     det_config, photo,
                                                     tmp_path):
    """DetInferencer and init_detector/inference_detector take the config
    and the checkpoint as they are: squares at score 1.00 only, with masks,
    the same from both."""
    from mmdet.apis import DetInferencer, inference_detector, init_detector
    from mmengine.config import Config
    model = init_detector(det_config, known_detector, device='cpu')
    result = inference_detector(model, photo).pred_instances
    assert len(result) > 0
    square = Config.fromfile(det_config).metainfo['classes'].index('square')
    assert result.labels.eq(square).all()
    assert result.scores.gt(0.99).all()
    assert result.masks.shape[-2:] == (600, 512)
    inferencer = DetInferencer(
        model=det_config,
        weights=known_detector,
        device='cpu',
        show_progress=False)
    out = inferencer(photo, out_dir=str(tmp_path), no_save_pred=False)
    predictions = out['predictions'][0]
    assert predictions['labels'] == result.labels.tolist()
    np.testing.assert_allclose(predictions['bboxes'], result.bboxes, atol=1e-3)
    assert (tmp_path / 'vis' / 'grace_hopper.jpg').stat().st_size > 10000


@pytest.mark.gpu
@pytest.mark.slow
def test_demo_trains_with_amp_on_the_gpu(det_config, tmp_path, run_tool):
    """One training epoch (30 iterations) of the demo config in mixed
    precision on CUDA (tools/train.py --amp), through mmcv's CUDA RoI ops."""
    proc = run_tool('tools/train.py', det_config, '--amp', '--work-dir',
                    str(tmp_path / 'work'), '--cfg-options',
                    'train_cfg.max_epochs=1', 'train_cfg.val_interval=1000',
                    'default_hooks.checkpoint.interval=1')
    log = proc.stdout + proc.stderr
    losses = [float(v) for v in re.findall(r' loss: ([\d.e+-]+|nan)', log)]
    assert losses and all(np.isfinite(losses)), log[-2000:]
    assert (tmp_path / 'work' / 'epoch_1.pth').exists()
