"""Parameter and FLOP counts as the paper reports them.

PeLK (like SLaK) is trained with 40% dynamic sparsity on its conv and linear
weights, and the paper's tables count the sparse model. These helpers count
a dense model and apply that density to the weights SLaK masks: every 2-D
(linear) and 4-D (conv, including the peripheral block weights) weight.
FLOPs come from :class:`mmengine.analysis.FlopAnalyzer` (one multiply-add is
one FLOP, the OpenMMLab convention).
"""
from typing import Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

SPARSE_DENSITY = 0.6  # the paper's 40% sparsity


def is_sparse_weight(name: str, param: torch.Tensor) -> bool:
    """Whether SLaK's masks cover this parameter (conv and linear weights)."""
    return name.endswith('weight') and param.dim() in (2, 4)


def count_params(model: nn.Module, density: float = 1.0) -> float:
    """Number of parameters, sparse weights counted at ``density``."""
    return sum(
        p.numel() * (density if is_sparse_weight(n, p) else 1.0)
        for n, p in model.named_parameters())


def _holds_sparse_weight(module: nn.Module) -> bool:
    return any(
        is_sparse_weight(n, p)
        for n, p in module.named_parameters(recurse=False))


@torch.no_grad()
def count_flops(model: nn.Module,
                inputs: Tuple[torch.Tensor, ...],
                density: float = 1.0) -> float:
    """FLOPs of one forward pass, FLOPs of sparse layers at ``density``.

    Args:
        model (nn.Module): The model, traced in its current mode.
        inputs (tuple[Tensor]): Its forward arguments.
        density (float): Density of the sparse weights. Defaults to 1.

    Returns:
        float: The count, one multiply-add being one FLOP.
    """
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    by_module = analyzer.by_module()
    sparse = sum(by_module.get(name, 0)
                 for name, module in model.named_modules()
                 if _holds_sparse_weight(module))
    return analyzer.total() - (1.0 - density) * sparse
