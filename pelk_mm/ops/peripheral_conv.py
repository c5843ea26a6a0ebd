"""Peripheral convolution modules (PeLK, section 4)."""
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer

from .functional import (PATHS, POS_BORDERS, grid_depthwise_conv,
                         peripheral_conv2d, peripheral_conv2d_reference,
                         positional_term)
from .grid import expand_by_grid, grid_tensor, sharing_grid


class KernelPositionEmbedding(nn.Module):
    """Kernel-wise positional embedding h of Eq. 3, shared by a stage.

    Args:
        channels (int): Channels C of the peripheral convs that share it.
        kernel_size (int): Their kernel size K.
        std (float): Std of the truncated-normal init (the paper leaves it
            open; 0.02 as for ViT position embeddings). Defaults to 0.02.

    Shape:
        ``weight``: (C, K, K).
    """

    def __init__(self, channels: int, kernel_size: int, std: float = 0.02):
        super().__init__()
        self.std = std
        self.weight = nn.Parameter(
            torch.zeros(channels, kernel_size, kernel_size))
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)


class PeripheralConv2d(nn.Module):
    """Depthwise KxK convolution with a peripheral (grid-shared) kernel.

    The dense kernel is expanded from k'xk' block weights by
    :func:`sharing_grid` (Eq. 1); see :mod:`pelk_mm.ops.functional` for the
    positional embedding term (Eq. 3), its border semantics, and the paths.

    Args:
        channels (int): Input and output channels C (depthwise).
        kernel_size (int): Side K of the dense kernel (odd).
        center_size (int): Side of the dense centre (odd). Defaults to 5.
        base (int): Growth factor of the grid cells. Defaults to 2.
        bias (bool): Whether to add a learnable per-channel bias.
            Defaults to False.
        pos_embed (KernelPositionEmbedding, optional): A positional embedding
            of shape (C, K, K), usually shared by every block of a stage. It is
            referenced, not registered: its owner (the stage) registers it, so
            checkpoints hold it once. Defaults to None.
        pos_border (str): ``'valid'`` (h only on in-image taps) or
            ``'padded'`` (h on padded taps too, i.e. a bias).
            Defaults to ``'valid'``.
        path (str): ``'auto'``, ``'direct'``, ``'fft'`` or ``'sat'``.
            Defaults to ``'auto'``.

    Shape:
        - Input: (B, C, H, W), any H and W (also smaller than K).
        - Output: (B, C, H, W).
        - ``weight``: (C, 1, k', k').
    """

    def __init__(self,
                 channels: int,
                 kernel_size: int,
                 center_size: int = 5,
                 base: int = 2,
                 bias: bool = False,
                 pos_embed: Optional[KernelPositionEmbedding] = None,
                 pos_border: str = 'valid',
                 path: str = 'auto'):
        super().__init__()
        if path not in PATHS:
            raise ValueError(f'path must be one of {PATHS}, got {path!r}')
        if pos_border not in POS_BORDERS:
            raise ValueError(f'pos_border must be one of {POS_BORDERS}, '
                             f'got {pos_border!r}')
        if pos_embed is not None and tuple(
                pos_embed.weight.shape) != (channels, kernel_size,
                                            kernel_size):
            raise ValueError(
                f'pos_embed has shape {tuple(pos_embed.weight.shape)}, but a '
                f'peripheral conv of {channels} channels and kernel '
                f'{kernel_size} needs ({channels}, {kernel_size}, '
                f'{kernel_size})')
        self.channels = channels
        self.kernel_size = kernel_size
        self.center_size = center_size
        self.base = base
        self.grid = sharing_grid(kernel_size, center_size, base)
        self.pos_border = pos_border
        self.path = path
        self.register_buffer(
            'grid_index', grid_tensor(self.grid), persistent=False)
        num_cells = len(self.grid)
        self.weight = nn.Parameter(
            torch.empty(channels, 1, num_cells, num_cells))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        # A tuple keeps the shared module out of this module's children.
        self._pos_embed = (pos_embed, )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Init as ``nn.Conv2d`` would init a dense KxK depthwise kernel."""
        bound = 1.0 / self.kernel_size  # 1 / sqrt(fan_in), fan_in = K * K
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def pos_embed(self) -> Optional[torch.Tensor]:
        """The shared positional embedding h, (C, K, K), or None."""
        module = self._pos_embed[0]
        return None if module is None else module.weight

    def expand_kernel(self) -> torch.Tensor:
        """The dense depthwise kernel, shape (C, 1, K, K)."""
        return expand_by_grid(self.weight, self.grid_index)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f'{type(self).__name__} expects input of shape '
                f'(B, {self.channels}, H, W), got {tuple(x.shape)}')

    def _pos_kernel(self, kernel: Optional[torch.Tensor] = None):
        """``W * h`` (C, K, K), or the frozen one of deploy mode, or None."""
        if self.pos_embed is not None:
            if kernel is None:
                kernel = self.expand_kernel()[:, 0]
            return kernel * self.pos_embed
        return getattr(self, 'pos_kernel', None)  # set by deploy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if hasattr(self, 'pos_kernel') and not torch.is_grad_enabled():
            # Deployed: the positional term and the bias depend only on the
            # map size; compute them once per size.
            out = grid_depthwise_conv(x, self.weight[:, 0], self.grid_index,
                                      self.path)
            return out + self._constant_terms(x)
        return peripheral_conv2d(
            x,
            self.weight[:, 0],
            self._pos_kernel(),
            self.pos_border,
            self.bias,
            self.path,
            grid=self.grid_index)

    def _constant_terms(self, x: torch.Tensor) -> torch.Tensor:
        """Positional term + bias of a deployed conv, cached per map size."""
        # Tensor versions change when a state dict is loaded in place.
        key = (tuple(x.shape[-2:]), x.dtype, x.device,
               self.pos_kernel._version,
               None if self.bias is None else self.bias._version)
        cached = getattr(self, '_constant_cache', None)
        if cached is None or cached[0] != key:
            term = positional_term(self.pos_kernel, *x.shape[-2:],
                                   self.pos_border)
            if self.bias is not None:
                term = term + self.bias.view(-1, 1, 1)
            cached = (key, term.to(x.dtype))
            self._constant_cache = cached
        return cached[1]

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same output through plain ``F.conv2d`` (slow, for tests)."""
        self._check_input(x)
        kernel = self.expand_kernel()[:, 0]
        pos_kernel = self._pos_kernel(kernel)
        return peripheral_conv2d_reference(x, kernel, pos_kernel,
                                           self.pos_border, self.bias)

    def extra_repr(self) -> str:
        return (f'{self.channels}, kernel_size={self.kernel_size}, '
                f'grid={self.grid}, pos_border={self.pos_border!r}, '
                f'path={self.path!r}')


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
        if self.deploy:
            out = self.large(conv_part)
        else:
            out = self.large_norm(self.large(conv_part))
            if self.small is not None:
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
        pos_embed = large.pos_embed
        if pos_embed is not None:
            # Freeze W * h now: h must not meet the merged small kernel.
            pos_kernel = expand_by_grid(weight[:, 0], large.grid_index)
            large.register_buffer('pos_kernel', pos_kernel * pos_embed)
        if self.small is not None:
            small_weight, small_bias = _fold_bn(self.small.weight,
                                                self.small_norm)
            start = (len(large.grid) - small_weight.shape[-1]) // 2
            stop = start + small_weight.shape[-1]
            weight[..., start:stop, start:stop] += small_weight
            bias = bias + small_bias
        large.weight.data.copy_(weight)
        large.bias = nn.Parameter(bias)
        large._pos_embed = (None, )
        del self.large_norm
        self.small = self.small_norm = None
        self.deploy = True
