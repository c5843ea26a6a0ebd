"""Which weights of a PeLK model are sparse, and how sparse.

PeLK trains with SLaK's dynamic sparsity: masks cover every conv and linear
weight (the classifier included) at 40% sparsity. The rule lives here, with
the models, because two users need exactly the same one: the sparsity hook
that applies the masks (:mod:`pelk_mm.engine`) and the parameter and FLOP
counter that counts them (:mod:`pelk_mm.analysis`).
"""
import torch

SPARSE_DENSITY = 0.6  # the paper's 40% sparsity


def is_sparse_weight(name: str, param: torch.Tensor) -> bool:
    """Whether SLaK's masks cover this parameter (conv and linear weights)."""
    return name.endswith('weight') and param.dim() in (2, 4)
