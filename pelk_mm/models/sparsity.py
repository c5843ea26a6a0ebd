"""Which weights of a PeLK model are sparse, and how sparse.

PeLK trains with SLaK's dynamic sparsity: masks cover every conv and linear
weight (the classifier included) at 40% sparsity; in PeLK that includes the
peripheral convs' k'xk' block weights. The rule lives here, with the models,
because two users need exactly the same one: the sparsity hook that applies
the masks (:mod:`pelk_mm.engine`) and the parameter and FLOP counter that
counts them (:mod:`pelk_mm.analysis`).

SLaK tells them by their number of dimensions (2 or 4); the rule here goes by
module type instead, because the peripheral block weights are (C, k', k'),
as is the positional embedding, which is not masked.
"""
from typing import Dict

import torch.nn as nn

from ..ops import PeripheralConv2d

SPARSE_DENSITY = 0.6  # the paper's 40% sparsity

#: Modules whose ``weight`` SLaK's masks cover.
SPARSE_MODULES = (nn.modules.conv._ConvNd, nn.Linear, PeripheralConv2d)


def holds_sparse_weight(module: nn.Module) -> bool:
    """Whether ``module.weight`` is one that SLaK's masks cover."""
    return isinstance(module, SPARSE_MODULES) and isinstance(
        getattr(module, 'weight', None), nn.Parameter)


def sparse_weights(model: nn.Module,
                   prefix: str = '') -> Dict[str, nn.Parameter]:
    """The sparse weights of ``model`` whose names start with ``prefix``.

    Returns:
        dict[str, Parameter]: By their ``named_parameters()`` names, e.g.
        ``'backbone.stages.0.blocks.0.mixer.large.weight'``.
    """
    weights = {}
    for name, module in model.named_modules():
        key = f'{name}.weight' if name else 'weight'
        if key.startswith(prefix) and holds_sparse_weight(module):
            weights[key] = module.weight
    return weights
