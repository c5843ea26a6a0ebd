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
element, as the paper counts them), whatever path computes them. What a
task counts (input size, which heads run) is :mod:`pelk_mm.tasks`'.
"""
from typing import Dict, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

from ..models.backbones import PeLK
from ..models.sparsity import (SPARSE_DENSITY, holds_sparse_weight,
                               sparse_weights)
from ..ops import PeripheralConv2d
from ..tasks import task_of


class ImageNetClassifier(nn.Module):
    """What the paper's ImageNet table counts: PeLK of ``arch`` and a
    1000-class linear head on its pooled last stage."""

    def __init__(self, arch):
        super().__init__()
        self.backbone = PeLK(arch)
        self.head = nn.Linear(self.backbone.channels[-1], 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[-1])


def count_params(model: nn.Module,
                 density: float = 1.0,
                 sparse_prefix: str = '') -> float:
    """Number of parameters, sparse weights under ``sparse_prefix`` counted
    at ``density``."""
    sparse = sparse_weights(model, sparse_prefix)
    return sum(p.numel() * (density if n in sparse else 1.0)
               for n, p in model.named_parameters())


def _dense_equivalent_flops(model: nn.Module, run) -> Dict[str, float]:
    """Dense-equivalent FLOPs (``K^2`` per output element) of every
    peripheral conv during ``run()``, by module name."""
    flops: Dict[str, float] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, PeripheralConv2d):

            def hook(mod, args, out, name=name):
                flops[name] = flops.get(name, 0.) + \
                    out.numel() * mod.kernel_size**2

            handles.append(module.register_forward_hook(hook))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
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
    peripheral = _dense_equivalent_flops(
        model, lambda: by_module.update(analyzer.by_module()))
    # Whatever path computed a peripheral conv in the trace (box sums,
    # direct, an FFT that the analyzer counts as nothing), it counts as
    # the dense conv it equals.
    total = analyzer.total()
    for name, value in peripheral.items():
        total += value - by_module.get(name, 0)
        by_module[name] = value
    sparse = sum(
        by_module.get(name, 0) for name, module in model.named_modules()
        if name.startswith(sparse_prefix) and holds_sparse_weight(module))
    return total - (1.0 - density) * sparse


def config_complexity(cfg,
                      shape: Tuple[int, int] = None,
                      density: float = SPARSE_DENSITY) -> Tuple[float, float]:
    """Params and FLOPs of the model of an OpenMMLab config.

    The backbone's conv and linear weights count at ``density`` (1 for the
    dense model); necks and heads are dense.

    Args:
        cfg (Config): A config with ``model`` and ``default_scope``.
        shape (tuple[int, int], optional): Input (H, W); defaults to the
            size the paper reports for the task (:mod:`pelk_mm.tasks`).
        density (float): Density of the backbone's sparse weights.

    Returns:
        tuple[float, float]: Parameters and FLOPs.
    """
    from mmengine.registry import MODELS, init_default_scope
    scope = cfg.get('default_scope', 'mmengine')
    task = task_of(scope)
    init_default_scope(scope)
    model = MODELS.build(cfg.model).eval()
    shape = shape or task.flops_shape
    params = count_params(model, density, sparse_prefix='backbone.')
    inputs = torch.randn(
        1, 3, *shape, generator=torch.Generator().manual_seed(0))
    wrapper = task.flops_model(model)
    flops = count_flops(
        wrapper, (inputs, ), density, sparse_prefix='model.backbone.')
    return params, flops
