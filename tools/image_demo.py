"""Run a trained detector on one image and draw its boxes and masks.

Usage:
    python tools/image_demo.py IMAGE CONFIG CHECKPOINT [--out-file OUT.png]
        [--score-thr 0.3] [--device cpu] [--overwrite]

Drawn by mmdet's own DetLocalVisualizer; the detections are also logged.
CONFIG is a detection config (``configs/cascade_mask_rcnn_pelk_*_coco*.py``);
for segmentation use ``tools/test.py --show-dir`` (or mmseg's
MMSegInferencer), for classification mmpretrain's
ImageClassificationInferencer.
"""
import argparse
import copy
import os.path as osp
import warnings

import mmcv
from mmdet.apis import inference_detector, init_detector
from mmdet.registry import DATASETS, VISUALIZERS
from mmengine.config import Config
from mmengine.logging import MMLogger

from pelk_mm.runtime import check_output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='its path or URL')
    parser.add_argument('--out-file', default='demo_result.png')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace --out-file if it exists')
    args = parser.parse_args()
    for path in (args.image, args.config, args.checkpoint):
        if not osp.isfile(path) and not (path is args.checkpoint
                                         and '://' in path):
            raise SystemExit(f'error: {path!r} not found')
    try:
        check_output(args.out_file, (args.image, args.config, args.checkpoint),
                     args.overwrite, '--out-file')
    except FileExistsError as err:
        raise SystemExit(f'error: {err}')
    scope = Config.fromfile(args.config).get('default_scope')
    if scope != 'mmdet':
        raise SystemExit(
            f'error: {args.config} is a config of {scope or "no codebase"}, '
            f'not of mmdet: image_demo.py draws detections (configs/'
            f'cascade_mask_rcnn_pelk_*_coco*.py). For segmentation, use '
            f'tools/test.py CONFIG CHECKPOINT --show-dir DIR; for '
            f'classification, '
            f'mmpretrain\'s ImageClassificationInferencer.')

    # init_detector drops the backbone's init_cfg: weights come from CKPT.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        model = init_detector(args.config, args.checkpoint, device=args.device)
    logger = MMLogger.get_instance('pelk_mm', log_level='INFO')
    if any('class names are not saved' in str(w.message) for w in caught):
        # mmdet would name the classes of a checkpoint without them (a
        # converted or hand-written one) after COCO's; the config is what
        # set the number of classes, so its names are the right ones.
        dataset = copy.deepcopy(model.cfg.test_dataloader.dataset)
        dataset['lazy_init'] = True
        classes = DATASETS.build(dataset).metainfo.get('classes')
        if classes:
            model.dataset_meta['classes'] = classes
            logger.info(f'{args.checkpoint} names no classes; using the '
                        f'config\'s: {", ".join(classes)}')
    result = inference_detector(model, args.image)
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    visualizer.add_datasample(
        'result',
        mmcv.imread(args.image, channel_order='rgb'),
        data_sample=result,
        draw_gt=False,
        show=False,
        out_file=args.out_file,
        pred_score_thr=args.score_thr)

    keep = result.pred_instances[result.pred_instances.scores >=
                                 args.score_thr]
    classes = model.dataset_meta['classes']
    found = ', '.join(
        f'{classes[int(label)]} {float(score):.2f} at '
        f'{[round(float(v)) for v in box]}'
        for label, score, box in zip(keep.labels, keep.scores, keep.bboxes))
    logger.info(f'{len(keep)} detections with score >= {args.score_thr}: '
                f'{found or "none"}; drawn to {args.out_file}')


if __name__ == '__main__':
    main()
