"""The mask algebra of SLaK's dynamic sparsity, in plain torch.

:class:`~pelk_mm.engine.DynamicSparsityHook` decides *when* (before
training, every ``update_interval`` iterations) and keeps the masks; the
functions here decide *which* weights, on tensors alone, so they can be
tested and reused without a Runner. Masks are boolean tensors of the
weights' shapes; ``generator`` is a CPU :class:`torch.Generator`.
"""
import math
from typing import Dict, Mapping

import torch

# A layer at least this dense after initialisation is left unmasked (SLaK).
DENSE_LAYER = 0.99


def uniform_keep_counts(weights: Mapping[str, torch.Tensor],
                        sparsity: float) -> Dict[str, int]:
    """``1 - sparsity`` of every layer's weights (at least one each)."""
    return {
        n: max(1, round(w.numel() * (1 - sparsity)))
        for n, w in weights.items()
    }


def snip_keep_counts(scores: Mapping[str, torch.Tensor],
                     sparsity: float) -> Dict[str, int]:
    """SNIP's layer densities: one threshold over all layers' scores keeps
    ``1 - sparsity`` of the weights; a layer keeps its scores strictly
    above it (as SLaK), at least one."""
    flat = torch.cat([s.flatten().cpu() for s in scores.values()])
    keep = int(flat.numel() * (1 - sparsity))
    threshold = flat.kthvalue(flat.numel() - keep + 1).values
    return {n: max(1, int((s > threshold).sum())) for n, s in scores.items()}


def snip_scores(weights: Mapping[str, torch.Tensor],
                grads: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """SNIP's saliency ``|w * dL/dw|`` (a weight without a gradient: 0)."""
    return {
        n: (w.detach() * (grads[n] if grads.get(n) is not None else 0)).abs()
        for n, w in weights.items()
    }


def place_masks(weights: Mapping[str, torch.Tensor], counts: Mapping[str, int],
                by: str,
                generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """Keep ``counts[name]`` weights of each layer: the largest
    (``by='magnitude'``) or at random (``by='random'``)."""
    if by not in ('magnitude', 'random'):
        raise ValueError(f"by must be 'magnitude' or 'random', got {by!r}")
    masks = {}
    for name, weight in weights.items():
        if by == 'magnitude':
            order = weight.detach().abs().flatten().cpu().argsort(
                descending=True)
        else:
            order = torch.randperm(weight.numel(), generator=generator)
        keep = torch.zeros(weight.numel(), dtype=torch.bool)
        keep[order[:counts[name]]] = True
        masks[name] = keep.view(weight.shape)
    return masks


def nonzero_masks(
        weights: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The non-zero weights of each layer (a loaded sparse model's)."""
    return {n: w.detach().ne(0).cpu() for n, w in weights.items()}


def density(masks: Mapping[str, torch.Tensor]) -> float:
    """The fraction of kept weights over all ``masks``."""
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(total, 1)


def without_dense_layers(
        masks: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The masks of layers below :data:`DENSE_LAYER` density (SLaK leaves
    the others unmasked)."""
    return {
        n: m
        for n, m in masks.items() if int(m.sum()) < DENSE_LAYER * m.numel()
    }


def cosine_prune_rate(rate: float, progress: float) -> float:
    """``rate`` annealed with a cosine to 0 at ``progress`` 1 (SLaK's)."""
    progress = min(max(progress, 0.0), 1.0)
    return rate * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def prune_and_regrow(weight: torch.Tensor, mask: torch.Tensor, rate: float,
                     generator: torch.Generator) -> int:
    """Move ``int(rate * active)`` of a layer's kept weights, in place.

    The smallest-magnitude active weights are dropped from ``mask``, and as
    many positions that were inactive before pruning are drawn at random
    and kept, their weights set to 0; the density is unchanged.

    Args:
        weight (Tensor): The layer's weight (modified: regrown entries 0).
        mask (Tensor): Its mask, same shape, 0/1 of any dtype (modified).
        rate (float): Fraction of the active weights to move.
        generator (torch.Generator): The random draw of regrown positions.

    Returns:
        int: How many weights moved.
    """
    flat_weight, flat = weight.view(-1), mask.view(-1)
    count = int(rate * int(flat.sum()))
    if count == 0:
        return 0
    magnitude = torch.where(flat.bool(), flat_weight.abs(),
                            torch.full_like(flat_weight, float('inf')))
    pruned = magnitude.topk(count, largest=False).indices
    inactive = (flat == 0).nonzero().flatten()  # before pruning
    choice = torch.randperm(len(inactive), generator=generator)
    regrown = inactive[choice[:count].to(inactive.device)]
    flat[pruned] = 0
    flat[regrown] = 1
    flat_weight[regrown] = 0  # grown weights start at 0
    return count


@torch.no_grad()
def apply_masks(weights: Mapping[str, torch.Tensor],
                masks: Mapping[str, torch.Tensor],
                optimizer_state: Mapping = None) -> None:
    """Zero the masked weights, and in ``optimizer_state`` (an optimizer's
    ``state``) their moments: every tensor of a weight's shape."""
    for name, mask in masks.items():
        weight = weights[name]
        weight.mul_(mask)
        state = (optimizer_state or {}).get(weight, {})
        for value in state.values():
            if torch.is_tensor(value) and value.shape == weight.shape:
                value.mul_(mask)
