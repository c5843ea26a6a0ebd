"""Effective receptive field (ERF) of a backbone, as the paper measures it.

The paper follows RepLKNet's analysis: for each image, the gradient of the
central point of the last stage's output (its channels summed, after a ReLU)
with respect to the input image, made non-negative and summed over the colour
channels, is averaged over the images. The map is shown as ``log10(map + 1)``
scaled to a maximum of 1, and summarised by the *high-contribution area
ratio*: for a threshold t, the area of the smallest centred square that
holds a fraction t of the (log-scaled) map's total, over the map's area. A
larger ratio at a given t means a larger effective receptive field.
"""
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


def erf_of_batch(backbone: nn.Module, layer: nn.Module,
                 images: torch.Tensor) -> torch.Tensor:
    """Summed input-gradient contribution of the central output point.

    Args:
        backbone (nn.Module): The network to run on ``images``.
        layer (nn.Module): The module inside it whose output (B, C, h, w)
            is analysed (usually the last stage).
        images (Tensor): Normalised images, (B, 3, H, W).

    Returns:
        Tensor: (H, W), the non-negative gradient summed over the batch
        and the colour channels.
    """
    captured = []
    handle = layer.register_forward_hook(
        lambda module, args, output: captured.append(output))
    images = images.clone().requires_grad_(True)
    try:
        backbone(images)
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f'{type(layer).__name__} did not run in the '
                           f'forward pass of {type(backbone).__name__}')
    out = captured[-1]
    if isinstance(out, (tuple, list)):
        out = out[-1]
    if out.dim() != 4:
        raise ValueError(f'the analysed layer must output a (B, C, h, w) '
                         f'map, got shape {tuple(out.shape)}')
    centre = out[:, :, out.shape[2] // 2, out.shape[3] // 2]
    grad, = torch.autograd.grad(centre.relu().sum(), images)
    return grad.relu().sum(dim=(0, 1))


def effective_receptive_field(backbone: nn.Module, layer: nn.Module,
                              batches: Iterable[torch.Tensor]) -> np.ndarray:
    """Average :func:`erf_of_batch` over images; returns an (H, W) array."""
    total, count = None, 0
    for images in batches:
        contribution = erf_of_batch(backbone, layer, images).detach()
        total = contribution if total is None else total + contribution
        count += images.shape[0]
    if total is None:
        raise ValueError('no images to analyse')
    return (total / count).double().cpu().numpy()


def log_scaled(erf: np.ndarray) -> np.ndarray:
    """``log10(erf + 1)`` scaled to a maximum of 1 (what is plotted)."""
    data = np.log10(erf + 1)
    peak = data.max()
    return data / peak if peak > 0 else data


def area_ratio(data: np.ndarray, threshold: float) -> float:
    """Area of the smallest centred square holding ``threshold`` of the sum
    of ``data`` (an (H, W) non-negative map), over H * W."""
    height, width = data.shape
    total = data.sum()
    if total <= 0:
        return 0.0
    cy, cx = height // 2, width // 2
    for radius in range(max(height, width)):
        box = data[max(cy - radius, 0):cy + radius + 1,
                   max(cx - radius, 0):cx + radius + 1]
        if box.sum() >= threshold * total:
            return box.size / data.size
    return 1.0


def area_ratios(
        erf: np.ndarray,
        thresholds: Sequence[float] = THRESHOLDS) -> Dict[float, float]:
    """High-contribution area ratios of the log-scaled map per threshold."""
    data = log_scaled(erf)
    return {t: area_ratio(data, t) for t in thresholds}


def save_heatmap(erf: np.ndarray,
                 path: str,
                 title: Optional[str] = None) -> None:
    """Write the log-scaled map as a PNG heatmap (matplotlib)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(5, 4.4))
    image = axes.imshow(log_scaled(erf), cmap='RdYlGn', vmin=0, vmax=1)
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
