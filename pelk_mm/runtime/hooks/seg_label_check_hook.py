"""Refuse segmentation labels that are not classes of the dataset, or not
of their image's size."""
from typing import Optional

import torch
from mmengine.hooks import Hook

from ...registry import HOOKS


@HOOKS.register_module()
class SegLabelCheckHook(Hook):
    """Stop at the first annotation with a value that is not a class.

    An ADE20K-style annotation holding 200 (of 150 classes) makes mmseg's
    IoUMetric report a wrong mIoU without a word, and training fail inside
    the loss with an IndexError that names no file. This hook looks at the
    ground truth of every batch (train, val and test; after the pipeline,
    so ``reduce_zero_label`` and padding are already applied) and raises
    naming the annotation file, its offending values as they are in the
    file, and the valid ones. Every segmentation config of pelk_mm sets it
    in ``default_hooks``.

    In validation and test it also checks that each annotation is of its
    image's size (mmseg's test pipelines load the annotation after resizing
    the image, so it is as stored in the file and must match ``ori_shape``;
    a pipeline that loads it first resizes both, to ``img_shape``): one of
    another size would make the metric fail with a ``stack`` error
    that names no file. In training the pipeline has resized and cropped
    both by then, and sizes cannot be told apart.

    Raises:
        ValueError: An annotation holds values that are neither a class
            index of the dataset nor its ``ignore_index``; or, in validation
            and test, is not of its image's size.
    """
    priority = 'VERY_HIGH'

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        self._check(runner.train_dataloader.dataset, data_batch)

    def before_val_iter(self,
                        runner,
                        batch_idx: int,
                        data_batch: Optional[dict] = None) -> None:
        self._check(runner.val_dataloader.dataset, data_batch, sizes=True)

    def before_test_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None) -> None:
        self._check(runner.test_dataloader.dataset, data_batch, sizes=True)

    @staticmethod
    def _check(dataset,
               data_batch: Optional[dict],
               sizes: bool = False) -> None:
        samples = (data_batch or {}).get('data_samples') or []
        if samples and isinstance(samples[0], (list, tuple)):
            samples = [s for views in samples for s in views]  # TTA views
        num_classes = len(dataset.metainfo['classes'])
        ignore = getattr(dataset, 'ignore_index', 255)
        for sample in samples:
            if 'gt_sem_seg' not in sample:
                continue
            labels = sample.gt_sem_seg.data
            image = tuple(sample.metainfo.get('ori_shape', ())[:2])
            resized = tuple(sample.metainfo.get('img_shape', image)[:2])
            if sizes and image and tuple(
                    labels.shape[-2:]) not in (image, resized):
                raise ValueError(
                    f'annotation {sample.metainfo.get("seg_map_path")} is '
                    f'{tuple(labels.shape[-2:])} (height, width), its image '
                    f'{sample.metainfo.get("img_path")} {image}: an '
                    'annotation must be of its image\'s size. Fix or remove '
                    'the pair.')
            bad = (labels >= num_classes) & (labels != ignore)
            if not bad.any():
                continue
            values = torch.unique(labels[bad]).tolist()
            reduced = sample.metainfo.get('reduce_zero_label', False)
            in_file = [v + 1 for v in values] if reduced else values
            valid = (f'1..{num_classes}, and 0 and 255 ignored '
                     f'(reduce_zero_label)' if reduced else
                     f'0..{num_classes - 1}, and {ignore} ignored')
            raise ValueError(
                f'annotation {sample.metainfo.get("seg_map_path")} holds '
                f'label values {in_file[:10]} outside the dataset\'s '
                f'{num_classes} classes (valid values in the file: '
                f'{valid}). Fix or remove the file, or set the dataset\'s '
                f'classes (metainfo) to match it.')
