"""Peripheral convolution modules (PeLK, section 4)."""
from typing import Optional

import torch
import torch.nn as nn

from .functional import (POS_BORDERS, grid_depthwise_conv,
                         peripheral_conv2d_reference,
                         peripheral_conv2d_unchecked, positional_table,
                         positional_term_from_table)
from .grid import expand_by_grid, grid_tensor, sharing_grid
from .paths import PATHS, tracing


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
        path (str): ``'auto'`` or a name of :mod:`pelk_mm.ops.paths`
            (``'direct'``, ``'fft'``, ``'box_sums'``, ``'sat'``,
            ``'triton'``). Defaults to ``'auto'``.

    Shape:
        - Input: (B, C, H, W), any H and W (also smaller than K).
        - Output: (B, C, H, W).
        - ``weight``: (C, k', k'), the block weights. Checkpoints that hold
          them as (C, 1, k', k') (as ``nn.Conv2d`` would) load too.
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
        # The widths again, as a tensor on the module's device, for the
        # kernels (``self.grid`` is the Python list shapes are taken from).
        self.register_buffer(
            'grid_widths', grid_tensor(self.grid), persistent=False)
        num_cells = len(self.grid)
        self.weight = nn.Parameter(torch.empty(channels, num_cells, num_cells))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        # A tuple keeps the shared module out of this module's children.
        self._pos_embed = (pos_embed, )
        # The inference form (see set_deployed): W * h frozen.
        self.deploy = False
        self.register_buffer('pos_kernel', None)
        # positional_table(pos_kernel), kept with it (derived, not saved).
        self.register_buffer('pos_table', None, persistent=False)
        self._constant_cache: Optional[tuple] = None
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
        """The dense depthwise kernel, shape (C, K, K)."""
        return expand_by_grid(self.weight, self.grid_widths, self.kernel_size)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f'{type(self).__name__} expects input of shape '
                f'(B, {self.channels}, H, W), got {tuple(x.shape)}')

    def _pos_kernel(self, kernel: Optional[torch.Tensor] = None):
        """``W * h`` (C, K, K), or the frozen one of deploy mode, or None."""
        if self.deploy:
            return self.pos_kernel
        if self.pos_embed is None:
            return None
        if kernel is None:
            kernel = self.expand_kernel()
        return kernel * self.pos_embed

    @torch.no_grad()
    def set_deployed(self, weight: torch.Tensor, bias: torch.Tensor,
                     pos_kernel: Optional[torch.Tensor]) -> None:
        """Become the inference form of a conv whose surroundings were
        folded in (:meth:`PeripheralMixer.switch_to_deploy`).

        Args:
            weight (Tensor): The new block weights, (C, k', k').
            bias (Tensor): The new bias, (C, ).
            pos_kernel (Tensor, optional): ``W * h`` frozen from the
                weights it belongs to, (C, K, K); None without embedding.
        """
        self.weight.data.copy_(weight)
        self.bias = nn.Parameter(bias)
        self.pos_kernel = pos_kernel
        self._refresh_pos_table()
        self._pos_embed = (None, )
        self.deploy = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Block weights saved as a depthwise conv's (C, 1, k', k').
        weight = state_dict.get(prefix + 'weight')
        if weight is not None and weight.dim() == 4 and weight.shape[1] == 1:
            state_dict[prefix + 'weight'] = weight[:, 0]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._refresh_pos_table()

    @torch.no_grad()
    def _refresh_pos_table(self) -> None:
        """Derive ``pos_table`` from ``pos_kernel`` (at deploy and load
        time, and on each eager cache miss, which an in-place change of
        ``pos_kernel`` is)."""
        kernel = self.pos_kernel
        self.pos_table = None if kernel is None else \
            positional_table(kernel, self.pos_border)

    def forward(self,
                x: torch.Tensor,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The conv of ``x`` (B, C, H, W), written into ``out`` where given
        ((B, C, H, W) of any strides, e.g. a channel slice of a larger
        map)."""
        self._check_input(x)
        if self.deploy and (not torch.is_grad_enabled()
                            or torch.jit.is_tracing()):
            # Deployed: the positional term and the bias depend only on the
            # map size; computed once per size, added by the conv's path.
            # Under torch.jit.trace whatever the grad mode: its check traces
            # again, without grad, and must record the same graph.
            return grid_depthwise_conv(x, self.weight, self.grid_widths,
                                       self.path, self.kernel_size,
                                       self._constant_terms(x), out)
        result = peripheral_conv2d_unchecked(
            x,
            self.weight,
            self._pos_kernel(),
            self.pos_border,
            self.bias,
            self.path,
            grid=self.grid_widths,
            kernel_size=self.kernel_size)
        return result if out is None else out.copy_(result)

    def _constant_terms(self, x: torch.Tensor) -> torch.Tensor:
        """Positional term + bias of a deployed conv: in a traced graph
        read from the kept ``pos_table`` (so that an exported graph takes
        any map size, and a compiled one sums no kernel per call); in eager
        mode cached per map size."""
        bias = self.bias
        assert bias is not None, 'a deployed conv has a bias'
        if self.pos_kernel is None:
            return bias.to(x.dtype).view(-1, 1, 1)
        height, width = x.shape[-2], x.shape[-1]
        if tracing():
            term = positional_term_from_table(self.pos_table, height, width,
                                              self.pos_border)
            return (term + bias.view(-1, 1, 1)).to(x.dtype)
        # Tensor versions change when a state dict is loaded in place.
        key = ((height, width), x.dtype, x.device, self.pos_kernel._version,
               bias._version)
        cached = self._constant_cache
        if cached is None or cached[0] != key:
            self._refresh_pos_table()
            term = positional_term_from_table(self.pos_table, height, width,
                                              self.pos_border)
            term = term + bias.view(-1, 1, 1)
            cached = (key, term.to(x.dtype))
            self._constant_cache = cached
        return cached[1]

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same output through plain ``F.conv2d`` (slow, for tests)."""
        self._check_input(x)
        kernel = self.expand_kernel()
        pos_kernel = self._pos_kernel(kernel)
        return peripheral_conv2d_reference(x, kernel, pos_kernel,
                                           self.pos_border, self.bias)

    def extra_repr(self) -> str:
        return (f'{self.channels}, kernel_size={self.kernel_size}, '
                f'grid={self.grid}, pos_border={self.pos_border!r}, '
                f'path={self.path!r}')
