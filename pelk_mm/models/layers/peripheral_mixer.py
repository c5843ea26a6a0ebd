"""The token mixer of a PeLK block: partial peripheral conv with a parallel
small kernel (PeLK, section 4.3)."""
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer

from ...ops import (KernelPositionEmbedding, PeripheralConv2d, expand_by_grid,
                    tracing)


def _fold_bn(weight: torch.Tensor, norm: nn.Module):
    """Fold an eval-mode BN that follows a bias-free conv into weight, bias."""
    std = (norm.running_var + norm.eps).sqrt()
    scale = norm.weight / std
    return (weight * scale.view(-1, *([1] * (weight.dim() - 1))),
            norm.bias - norm.running_mean * scale)


class PeripheralMixer(nn.Module):
    """Partial peripheral conv with a parallel small depthwise kernel.

    The first ``int(channels * partial_ratio)`` channels go through a
    peripheral conv (+BN) and, in parallel, a small dense depthwise conv
    (+BN), and the two are summed; the other channels pass unchanged
    (PeLK 4.3). :meth:`switch_to_deploy` folds both BNs and merges the small
    kernel into the dense centre of the peripheral kernel, so the deployed
    mixer is a single peripheral conv with a bias.

    Args:
        channels (int): Channels of the block.
        kernel_size (int): Size K of the peripheral kernel.
        center_size (int): Dense centre of the grid. Defaults to 5.
        base (int): Growth factor of the grid. Defaults to 2.
        partial_ratio (float): Fraction of channels that are convolved.
            Defaults to 3/8.
        small_kernel (int, optional): Size of the parallel dense kernel; it
            must fit in the dense centre. None disables the branch.
            Defaults to 5.
        pos_embed (KernelPositionEmbedding, optional): Shared h.
        pos_border (str): Border semantics of h. Defaults to ``'valid'``.
        norm_cfg (dict): Norm of both branches.
            Defaults to ``dict(type='BN')``.
        path (str): Path of the peripheral conv. Defaults to ``'auto'``.

    Shape:
        - Input: (B, channels, H, W). Output: the same.
    """

    def __init__(self,
                 channels: int,
                 kernel_size: int,
                 center_size: int = 5,
                 base: int = 2,
                 partial_ratio: float = 3 / 8,
                 small_kernel: Optional[int] = 5,
                 pos_embed: Optional[KernelPositionEmbedding] = None,
                 pos_border: str = 'valid',
                 norm_cfg: dict = dict(type='BN'),
                 path: str = 'auto'):
        super().__init__()
        if not 0 < partial_ratio <= 1:
            raise ValueError(
                f'partial_ratio must be in (0, 1], got {partial_ratio}')
        conv_channels = int(channels * partial_ratio)
        if conv_channels < 1:
            raise ValueError(
                f'partial_ratio {partial_ratio} of {channels} channels leaves '
                f'no channel for the peripheral conv')
        if small_kernel is not None and (small_kernel % 2 == 0
                                         or small_kernel > center_size):
            raise ValueError(
                f'small_kernel ({small_kernel}) must be odd and not larger '
                f'than center_size ({center_size}), so that it merges into '
                f'the dense centre at deploy time')
        self.channels = channels
        self.conv_channels = conv_channels
        self.deploy = False
        self.large = PeripheralConv2d(conv_channels, kernel_size, center_size,
                                      base, False, pos_embed, pos_border, path)
        self.large_norm = build_norm_layer(norm_cfg, conv_channels)[1]
        if small_kernel is None:
            self.small = self.small_norm = None
        else:
            self.small = nn.Conv2d(
                conv_channels,
                conv_channels,
                small_kernel,
                padding=small_kernel // 2,
                groups=conv_channels,
                bias=False)
            self.small_norm = build_norm_layer(norm_cfg, conv_channels)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv_part, identity = x.split(
            [self.conv_channels, self.channels - self.conv_channels], dim=1)
        if self.deploy and not (tracing() or torch.is_grad_enabled()):
            # The conv writes its output (with bias and positional term)
            # into its channels of the mixer's, instead of a concatenation
            # copying it there.
            mixed = torch.empty_like(x)
            self.large(conv_part, out=mixed[:, :self.conv_channels])
            mixed[:, self.conv_channels:] = identity
            return mixed
        if self.deploy:
            out = self.large(conv_part)
        else:
            out = self.large_norm(self.large(conv_part))
            if self.small is not None and self.small_norm is not None:
                out = out + self.small_norm(self.small(conv_part))
        return torch.cat([out, identity], dim=1)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold the BNs and merge the small kernel into the dense centre.

        The peripheral conv keeps its k'xk' block weights (the small kernel
        lands on width-1 cells), gains a bias, and keeps the positional term
        computed with the folded large kernel only (the small branch never
        saw h).
        """
        if self.deploy:
            return
        large = self.large
        weight, bias = _fold_bn(large.weight, self.large_norm)
        pos_kernel = None
        if large.pos_embed is not None:
            # Freeze W * h now: h must not meet the merged small kernel.
            pos_kernel = expand_by_grid(weight, large.grid_widths,
                                        large.kernel_size) * large.pos_embed
        if self.small is not None:
            small_weight, small_bias = _fold_bn(self.small.weight,
                                                self.small_norm)
            start = (len(large.grid) - small_weight.shape[-1]) // 2
            stop = start + small_weight.shape[-1]
            weight[:, start:stop, start:stop] += small_weight[:, 0]
            bias = bias + small_bias
        large.set_deployed(weight, bias, pos_kernel)
        self.large_norm = self.small = self.small_norm = None
        self.deploy = True
