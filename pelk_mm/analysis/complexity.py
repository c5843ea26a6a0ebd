"""Parameter and FLOP counts as the paper reports them.

PeLK (like SLaK) is trained with 40% dynamic sparsity on its conv and linear
weights, and the paper's tables count the sparse model. These helpers count
a dense model and apply that density to the weights SLaK masks (conv and
linear weights, the peripheral block weights included; see
:mod:`pelk_mm.models.sparsity`), of the whole model or of the part under
``sparse_prefix`` (the backbone of a detector or segmentor, whose heads are
dense).

FLOPs come from :class:`mmengine.analysis.FlopAnalyzer` (one multiply-add is
one FLOP, the OpenMMLab convention), except for the peripheral convs, which
are counted as the dense KxK depthwise conv they equal (``K^2`` per output
element, as the paper counts them), whatever path computes them.
"""
from typing import Dict, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

from ..models.sparsity import (SPARSE_DENSITY, holds_sparse_weight,
                               sparse_weights)
from ..ops import PeripheralConv2d


def count_params(model: nn.Module,
                 density: float = 1.0,
                 sparse_prefix: str = '') -> float:
    """Number of parameters, sparse weights under ``sparse_prefix`` counted
    at ``density``."""
    sparse = sparse_weights(model, sparse_prefix)
    return sum(p.numel() * (density if n in sparse else 1.0)
               for n, p in model.named_parameters())


def _peripheral_flops(model: nn.Module, run) -> Dict[str, float]:
    """Dense-equivalent FLOPs of every peripheral conv during ``run()``,
    computed on the FFT path, which FlopAnalyzer counts as zero."""
    flops: Dict[str, float] = {}
    handles, paths = [], {}
    for name, module in model.named_modules():
        if isinstance(module, PeripheralConv2d):
            paths[module] = module.path
            module.path = 'fft'

            def hook(mod, args, out, name=name):
                flops[name] = flops.get(name, 0.) + \
                    out.numel() * mod.kernel_size**2

            handles.append(module.register_forward_hook(hook))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
        for module, path in paths.items():
            module.path = path
    return flops


@torch.no_grad()
def count_flops(model: nn.Module,
                inputs: Tuple[torch.Tensor, ...],
                density: float = 1.0,
                sparse_prefix: str = '') -> float:
    """FLOPs of one forward pass, sparse layers counted at ``density``.

    Args:
        model (nn.Module): The model, traced in its current mode.
        inputs (tuple[Tensor]): Its forward arguments.
        density (float): Density of the sparse weights. Defaults to 1.
        sparse_prefix (str): Only modules whose name starts with it are
            sparse, e.g. ``'backbone'``. Defaults to '' (all).

    Returns:
        float: The count, one multiply-add being one FLOP.
    """
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    by_module = {}
    peripheral = _peripheral_flops(
        model, lambda: by_module.update(analyzer.by_module()))
    for name, value in peripheral.items():
        by_module[name] = by_module.get(name, 0) + value
    sparse = sum(
        by_module.get(name, 0) for name, module in model.named_modules()
        if name.startswith(sparse_prefix) and holds_sparse_weight(module))
    total = analyzer.total() + sum(peripheral.values())
    return total - (1.0 - density) * sparse


# Input (H, W) the paper reports FLOPs at, by the config's default scope.
DEFAULT_SHAPES = {
    'mmseg': (512, 2048),
    'mmdet': (800, 1280),
    'mmpretrain': (224, 224)
}


class _TensorMode(nn.Module):
    """Calls an OpenMMLab model in ``mode='tensor'`` (no data samples)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, mode='tensor')


class _TwoStageDummy(nn.Module):
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


def config_complexity(cfg,
                      shape: Tuple[int, int] = None,
                      density: float = SPARSE_DENSITY) -> Tuple[float, float]:
    """Params and FLOPs of the model of an OpenMMLab config.

    The backbone's conv and linear weights count at ``density`` (1 for the
    dense model); necks and heads are dense.

    Args:
        cfg (Config): A config with ``model`` and ``default_scope``.
        shape (tuple[int, int], optional): Input (H, W); defaults to the
            size the paper reports for the task (:data:`DEFAULT_SHAPES`).
        density (float): Density of the backbone's sparse weights.

    Returns:
        tuple[float, float]: Parameters and FLOPs.
    """
    from mmengine.registry import MODELS, init_default_scope
    scope = cfg.get('default_scope', 'mmengine')
    init_default_scope(scope)
    model = MODELS.build(cfg.model).eval()
    shape = shape or DEFAULT_SHAPES.get(scope, (224, 224))
    params = count_params(model, density, sparse_prefix='backbone.')
    inputs = torch.randn(
        1, 3, *shape, generator=torch.Generator().manual_seed(0))
    wrapper = _TwoStageDummy(model) if hasattr(model, 'roi_head') else \
        _TensorMode(model)
    flops = count_flops(
        wrapper, (inputs, ), density, sparse_prefix='model.backbone.')
    return params, flops
