"""What differs between the three OpenMMLab tasks pelk_mm serves, in one
table keyed by a config's ``default_scope``.

Tools and analysis look a task up here (:func:`task_of`) instead of
branching on it; adding a task is one entry of :data:`TASKS` (and its
recipes and tests).
"""
from typing import Callable, Dict, NamedTuple, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .synthetic import generate_ade20k, generate_coco, generate_imagenet


class Task(NamedTuple):
    """One task's differences.

    Attributes:
        name (str): For people.
        flops_shape (tuple[int, int]): The input (H, W) the paper reports
            FLOPs at.
        flops_model (callable): ``model -> module`` whose forward of an
            image batch runs what the FLOPs count (:class:`TensorMode`, or
            :class:`TwoStageDummy` for detectors).
        export_graph (callable): ``model -> module`` that the ONNX export
            writes: images (B, 3, H, W), 0-255, in; tensors out.
        main_metrics (tuple[str]): The validation metrics that matter, as
            mmengine's scalar logs name them.
        show_dir_in_hook (bool): Whether ``--show-dir`` is the visualization
            hook's ``test_out_dir`` (mmdet) rather than the visualizer's
            ``save_dir``.
        dataset (str): The synthetic dataset's name, for
            ``tools/dataset_converters/generate_dataset.py``.
        dataset_type (str): The dataset type of the paper's configs.
        generate (callable): Its generator (:mod:`pelk_mm.synthetic`).
        default_root (str): Where the demos expect it.
        root_of_data_root (bool): Whether the generator's root is the folder
            above the config's ``data_root`` (ADE20K's
            ``ADEChallengeData2016``) rather than ``data_root`` itself.
    """
    name: str
    flops_shape: Tuple[int, int]
    flops_model: Callable[[nn.Module], nn.Module]
    export_graph: Callable[[nn.Module], nn.Module]
    main_metrics: Tuple[str, ...]
    show_dir_in_hook: bool
    dataset: str
    dataset_type: str
    generate: Callable[..., str]
    default_root: str
    root_of_data_root: bool = False


class TensorMode(nn.Module):
    """Calls an OpenMMLab model in ``mode='tensor'`` (no data samples)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, mode='tensor')


class TwoStageDummy(nn.Module):
    """A two-stage detector as mmdet 2.x's ``forward_dummy`` ran it, the
    convention behind the FLOPs of Swin, ConvNeXt, SLaK and PeLK: backbone,
    neck and RPN head on the image, 1000 proposals through every box head,
    the first 100 through every mask head."""

    def __init__(self,
                 model: nn.Module,
                 num_rois: int = 1000,
                 num_mask_rois: int = 100):
        super().__init__()
        self.model = model
        self.num_rois, self.num_mask_rois = num_rois, num_mask_rois

    def forward(self, inputs: torch.Tensor):
        from mmdet.structures.bbox import bbox2roi
        feats = self.model.extract_feat(inputs)
        outs = self.model.rpn_head(feats)
        height, width = inputs.shape[-2:]
        gen = torch.Generator().manual_seed(0)
        xy = torch.rand(
            self.num_rois, 2, generator=gen) * inputs.new_tensor(
                [width, height]) * 0.75
        wh = torch.rand(
            self.num_rois, 2, generator=gen) * inputs.new_tensor(
                [width, height]) * 0.25 + 1
        rois = bbox2roi([torch.cat([xy, xy + wh], dim=1)])
        roi_head = self.model.roi_head
        stages = [(i, ) for i in range(roi_head.num_stages)] \
            if hasattr(roi_head, 'num_stages') else [()]
        for stage in stages:
            result = roi_head._bbox_forward(*stage, feats, rois)
            outs += (result['cls_score'], result['bbox_pred'])
        if getattr(roi_head, 'with_mask', False):
            for stage in stages:
                result = roi_head._mask_forward(*stage, feats,
                                                rois[:self.num_mask_rois])
                outs += (result['mask_preds'], )
        return outs


def flops_model(model: nn.Module) -> nn.Module:
    """A detector with RoI heads as :class:`TwoStageDummy`, any other model
    in tensor mode (what a task's ``flops_model`` is for detection)."""
    return TwoStageDummy(model) if hasattr(model, 'roi_head') else \
        TensorMode(model)


class NormalizedGraph(nn.Module):
    """Images (B, 3, H, W), 0-255, to what the network takes (the model's
    data preprocessor's mean/std, in the graph), then ``graph_forward``.

    Attributes:
        outputs (list[str]): Names of the graph's outputs.
    """
    outputs: Sequence[str] = ()

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        preprocessor = getattr(model, 'data_preprocessor', None)
        self.normalize = bool(
            getattr(preprocessor, '_enable_normalize', False))
        if self.normalize:
            self.register_buffer('mean', preprocessor.mean.clone())
            self.register_buffer('std', preprocessor.std.clone())

    def forward(self, images: torch.Tensor):
        x = (images - self.mean) / self.std if self.normalize else images
        return self.graph_forward(x)

    def graph_forward(self, x: torch.Tensor):
        raise NotImplementedError


class ClassifierGraph(NormalizedGraph):
    """Logits (B, num_classes)."""
    outputs = ['logits']

    def graph_forward(self, x):
        return self.model(x, mode='tensor')


class SegmentorGraph(NormalizedGraph):
    """Segmentation logits at the input size (B, num_classes, H, W), from
    whole-image inference."""
    outputs = ['seg_logits']

    def graph_forward(self, x):
        logits = self.model(x, mode='tensor')
        return F.interpolate(
            logits,
            size=x.shape[-2:],
            mode='bilinear',
            align_corners=self.model.decode_head.align_corners)


class DetectorFeatures(NormalizedGraph):
    """The neck's feature maps (FPN levels); the heads stay in PyTorch."""

    def __init__(self, model: nn.Module):
        if not getattr(model, 'with_neck', False):
            raise ValueError(f'cannot export a {type(model).__name__}: the '
                             f'detector graph is its neck\'s features, and '
                             f'it has no neck')
        super().__init__(model)
        self.outputs = [f'features_{i}' for i in range(model.neck.num_outs)]

    def graph_forward(self, x):
        return self.model.extract_feat(x)


TASKS: Dict[str, Task] = {
    'mmpretrain':
    Task(
        name='classification',
        flops_shape=(224, 224),
        flops_model=TensorMode,
        export_graph=ClassifierGraph,
        main_metrics=('accuracy/top1', ),
        show_dir_in_hook=False,
        dataset='imagenet',
        dataset_type='ImageNet',
        generate=generate_imagenet,
        default_root='data/imagenet_synthetic'),
    'mmseg':
    Task(
        name='semantic segmentation',
        flops_shape=(512, 2048),
        flops_model=TensorMode,
        export_graph=SegmentorGraph,
        main_metrics=('mIoU', ),
        show_dir_in_hook=False,
        dataset='ade20k',
        dataset_type='ADE20KDataset',
        generate=generate_ade20k,
        default_root='data/ade_synthetic',
        root_of_data_root=True),
    'mmdet':
    Task(
        name='detection and instance segmentation',
        flops_shape=(800, 1280),
        flops_model=flops_model,
        export_graph=DetectorFeatures,
        main_metrics=('coco/bbox_mAP', 'coco/segm_mAP'),
        show_dir_in_hook=True,
        dataset='coco',
        dataset_type='CocoDataset',
        generate=generate_coco,
        default_root='data/coco_synthetic'),
}


def task_of(scope: str) -> Task:
    """The task of a config's ``default_scope``.

    Raises:
        ValueError: If pelk_mm serves no task of that scope.
    """
    try:
        return TASKS[scope]
    except KeyError:
        raise ValueError(
            f'pelk_mm has no task for default_scope {scope!r}; it serves '
            f'{", ".join(f"{s} ({t.name})" for s, t in TASKS.items())}') \
            from None


def task_of_dataset(key: str, by: str = 'dataset'):
    """The task whose synthetic dataset has ``by`` (``'dataset'`` or
    ``'dataset_type'``) equal to ``key``, or None."""
    for task in TASKS.values():
        if getattr(task, by) == key:
            return task
    return None
