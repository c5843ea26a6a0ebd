"""PeLK: Parameter-efficient Large Kernel ConvNets (Chen et al., CVPR 2024).

One backbone for classification (mmpretrain), segmentation (mmseg) and
detection (mmdet). The macro design is ConvNeXt's / SLaK's; every block mixes
tokens with a partial peripheral convolution (:class:`PeripheralMixer`).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from ...ops import (RESIZE_MODES, KernelPositionEmbedding, PeripheralConv2d,
                    regrid_state_dict)
from ...registry import MODELS
from ...runtime import load_pretrained, require_file
from ..layers import LayerNorm2d, PeripheralMixer


class PeLKBlock(nn.Module):
    """Peripheral mixer -> LayerNorm -> Linear 4x -> GELU -> Linear ->
    layer scale -> drop path, with a residual connection.

    Args:
        channels (int): Channels C.
        kernel_size (int): Peripheral kernel size of the stage.
        pos_embed (KernelPositionEmbedding, optional): The stage's shared h.
        mixer_cfg (dict): Extra arguments of :class:`PeripheralMixer`.
        mlp_ratio (float): Hidden width of the MLP over C. Defaults to 4.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        layer_scale_init_value (float): Init of the layer scale; 0 disables
            it. Defaults to 1e-6.
        with_cp (bool): Use gradient checkpointing. Defaults to False.

    Shape:
        Input and output: (B, C, H, W).
    """

    def __init__(self,
                 channels: int,
                 kernel_size: int,
                 pos_embed: Optional[KernelPositionEmbedding] = None,
                 mixer_cfg: dict = dict(),
                 mlp_ratio: float = 4.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.mixer = PeripheralMixer(
            channels, kernel_size, pos_embed=pos_embed, **mixer_cfg)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        hidden = int(mlp_ratio * channels)
        self.pointwise_conv1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.pointwise_conv2 = nn.Linear(hidden, channels)
        self.gamma = nn.Parameter(
            layer_scale_init_value * torch.ones(channels),
            requires_grad=True) if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(
            drop_path_rate) if drop_path_rate > 0. else nn.Identity()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.mixer(x).permute(0, 2, 3, 1)
        x = self.pointwise_conv2(self.act(self.pointwise_conv1(self.norm(x))))
        if self.gamma is not None:
            x = x * self.gamma
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class PeLKStage(nn.Module):
    """A stage: blocks that share one kernel-wise positional embedding.

    The embedding is registered here (``stages.i.pos_embed.weight``) and
    only referenced by the blocks' peripheral convs, so it is saved once.

    Loading a checkpoint whose stage was trained with another kernel size
    (told by its positional embedding, (C, K, K)) re-grids the peripheral
    weights and the embedding (:mod:`pelk_mm.ops.regrid`) with
    ``kernel_resize`` (``'pad'`` or ``'interpolate'``), or refuses with a
    clear error when it is None.
    """

    def __init__(self,
                 blocks: List[PeLKBlock],
                 pos_embed: Optional[KernelPositionEmbedding],
                 kernel_resize: Optional[str] = 'pad'):
        super().__init__()
        if kernel_resize is not None and kernel_resize not in RESIZE_MODES:
            raise ValueError(f'kernel_resize must be one of {RESIZE_MODES} '
                             f'or None, got {kernel_resize!r}')
        self.pos_embed = pos_embed
        self.blocks = nn.ModuleList(blocks)
        self.kernel_resize = kernel_resize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Parents load before their children, so re-gridding the entries
        # here is what the blocks' peripheral convs then load.
        self._regrid_checkpoint(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _regrid_checkpoint(self, state_dict: dict, prefix: str) -> None:
        convs = {
            f'{prefix}{name}.': module
            for name, module in self.named_modules()
            if isinstance(module, PeripheralConv2d)
        }
        done = regrid_state_dict(state_dict, convs,
                                 prefix + 'pos_embed.weight',
                                 self.kernel_resize, prefix[:-1])
        if done:
            MMLogger.get_current_instance().warning(done)


@MODELS.register_module()
class PeLK(BaseModule):
    """PeLK backbone.

    A PyTorch implementation of `PeLK: Parameter-efficient Large Kernel
    ConvNets with Peripheral Convolution <https://arxiv.org/abs/2403.07589>`_.

    Architecture (paper 4.4): a 4x4 stride-4 stem, four stages with
    LayerNorm + 2x2 stride-2 downsampling between them; kernels per stage
    [51, 49, 47, 13] ([101, 69, 67, 13] for ``base-101``); 3/8 of each
    block's channels go through the peripheral conv, with a parallel 5x5
    depthwise conv; one positional embedding per stage.

    Widths are SLaK's (ConvNeXt's x1.3, truncated): the paper trains with
    SLaK's dynamic sparsity, so its parameter and FLOP counts are of the 40%
    sparse model (how they are taken: :mod:`pelk_mm.analysis.complexity`;
    the counts of every arch, ours beside the paper's, are in
    ``configs/metafile.yml``).

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'``,
            ``'base-101'`` (or ``'t'``, ``'s'``, ``'b'``, ``'b101'``), or a
            dict with ``depths``, ``channels``, ``kernel_sizes`` and,
            optionally, ``center_size`` (default 5). Defaults to ``'tiny'``.
        in_channels (int): Channels of the input images. Defaults to 3.
        stem_patch_size (int): Patch size of the stem. Defaults to 4.
        partial_ratio (float): Fraction of channels through the peripheral
            conv. Defaults to 3/8.
        small_kernel (int, optional): Size of the parallel dense kernel;
            None disables it. Defaults to 5.
        grid_base (int): Growth factor m of the sharing grid. Defaults to 2.
        pos_embed (bool): Use the kernel-wise positional embedding.
            Defaults to True.
        pos_embed_std (float): Its truncated-normal std. Defaults to 0.02.
        pos_border (str): Its border semantics, ``'valid'`` or ``'padded'``
            (see :mod:`pelk_mm.ops.functional`). Defaults to ``'valid'``.
        conv_path (str): Peripheral conv path: ``'auto'`` or a name of
            :data:`pelk_mm.ops.PATHS` (see ``docs/ops.md``). Defaults to
            ``'auto'``.
        kernel_resize (str, optional): How a checkpoint trained with other
            kernel sizes is loaded: ``'pad'`` (keep the taps, zeros beyond;
            crop when shrinking), ``'interpolate'`` (stretch the kernel), or
            None (refuse). See :mod:`pelk_mm.ops.regrid`.
            Defaults to ``'pad'``.
        mixer_norm_cfg (dict): Norm of the mixer branches.
            Defaults to ``dict(type='BN')``.
        mlp_ratio (float): MLP expansion. Defaults to 4.
        drop_path_rate (float): Stochastic depth rate, linearly increasing
            over blocks. Defaults to 0.
        layer_scale_init_value (float): Init of layer scale. Defaults to 1e-6.
        out_indices (Sequence[int] | int): Stages whose outputs are returned.
            Defaults to -1 (the last).
        frozen_stages (int): Stages (with their downsampling layer) to freeze.
            Defaults to 0.
        norm_eval (bool): Keep the BNs in eval mode while training.
            Defaults to False.
        with_cp (bool): Gradient checkpointing in the blocks.
            Defaults to False.
        gap_before_final_norm (bool): Global-average-pool the outputs before
            their norm (classification) instead of returning feature maps
            (dense prediction). Defaults to True.
        deploy (bool): Build the inference form directly (what
            :meth:`switch_to_deploy` makes of a trained model: one peripheral
            conv with a bias and a frozen positional term per mixer), to load
            a checkpoint saved after :meth:`switch_to_deploy`. Defaults to
            False.
        init_cfg (dict | list[dict], optional): Initialization config.
            Defaults to SLaK's: a truncated normal of std 0.02 for every
            conv and linear weight, the peripheral block weights included,
            zero biases, LayerNorms at 1 and 0. Use ``dict(type='Pretrained',
            checkpoint=..., prefix='backbone.')`` for ImageNet weights.

    Shape:
        - Input: (B, in_channels, H, W).
        - Output: a tuple with, per ``out_indices`` entry i, a map of shape
          (B, channels[i], H / 2^(i+2), W / 2^(i+2)), or (B, channels[i])
          when ``gap_before_final_norm``.
    """
    init_cfg: Optional[Union[dict, List[dict]]]
    arch_settings = {
        'tiny': {
            'depths': [3, 3, 9, 3],
            'channels': [124, 249, 499, 998],
            'kernel_sizes': [51, 49, 47, 13],
            'center_size': 5,
        },
        'small': {
            'depths': [3, 3, 27, 3],
            'channels': [124, 249, 499, 998],
            'kernel_sizes': [51, 49, 47, 13],
            'center_size': 5,
        },
        'base': {
            'depths': [3, 3, 27, 3],
            'channels': [166, 332, 665, 1331],
            'kernel_sizes': [51, 49, 47, 13],
            'center_size': 5,
        },
        'base-101': {
            'depths': [3, 3, 27, 3],
            'channels': [166, 332, 665, 1331],
            'kernel_sizes': [101, 69, 67, 13],
            'center_size': 7,
        },
    }
    arch_aliases = {'t': 'tiny', 's': 'small', 'b': 'base', 'b101': 'base-101'}

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 stem_patch_size: int = 4,
                 partial_ratio: float = 3 / 8,
                 small_kernel: Optional[int] = 5,
                 grid_base: int = 2,
                 pos_embed: bool = True,
                 pos_embed_std: float = 0.02,
                 pos_border: str = 'valid',
                 conv_path: str = 'auto',
                 kernel_resize: Optional[str] = 'pad',
                 mixer_norm_cfg: dict = dict(type='BN'),
                 mlp_ratio: float = 4.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 out_indices: Union[Sequence[int], int] = -1,
                 frozen_stages: int = 0,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 gap_before_final_norm: bool = True,
                 deploy: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = [
                     dict(
                         type='TruncNormal',
                         layer=['Conv2d', 'Linear', 'PeripheralConv2d'],
                         std=.02,
                         bias=0.),
                     dict(
                         type='Constant', layer=['LayerNorm'], val=1.,
                         bias=0.),
                 ]):
        super().__init__(init_cfg=init_cfg)
        self.deploy = False  # switch_to_deploy() makes the inference form
        arch = self._parse_arch(arch)
        self.depths = list(arch['depths'])
        self.channels = list(arch['channels'])
        self.kernel_sizes = list(arch['kernel_sizes'])
        self.center_size = arch['center_size']
        self.num_stages = len(self.depths)
        self.in_channels = in_channels
        self.out_indices = self._parse_out_indices(out_indices)
        if not 0 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [0, '
                             f'{self.num_stages}], got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.gap_before_final_norm = gap_before_final_norm

        if isinstance(drop_path_rate, bool) or not isinstance(
                drop_path_rate, (int, float)) or not 0. <= drop_path_rate < 1.:
            raise ValueError(f'drop_path_rate must be a number in [0, 1), '
                             f'got {drop_path_rate!r}')
        dpr = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        mixer_cfg = dict(
            center_size=self.center_size,
            base=grid_base,
            partial_ratio=partial_ratio,
            small_kernel=small_kernel,
            pos_border=pos_border,
            norm_cfg=mixer_norm_cfg,
            path=conv_path)

        self.downsample_layers = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(
                    in_channels,
                    self.channels[0],
                    stem_patch_size,
                    stride=stem_patch_size),
                LayerNorm2d(self.channels[0], eps=1e-6))
        ])
        self.stages = nn.ModuleList()
        block_idx = 0
        for i, (depth, channels, kernel_size) in enumerate(
                zip(self.depths, self.channels, self.kernel_sizes)):
            if i > 0:
                self.downsample_layers.append(
                    nn.Sequential(
                        LayerNorm2d(self.channels[i - 1], eps=1e-6),
                        nn.Conv2d(self.channels[i - 1], channels, 2,
                                  stride=2)))
            stage_pos_embed = KernelPositionEmbedding(
                int(channels * partial_ratio), kernel_size,
                pos_embed_std) if pos_embed else None
            blocks = [
                PeLKBlock(channels, kernel_size, stage_pos_embed, mixer_cfg,
                          mlp_ratio, dpr[block_idx + j],
                          layer_scale_init_value, with_cp)
                for j in range(depth)
            ]
            block_idx += depth
            self.stages.append(
                PeLKStage(blocks, stage_pos_embed, kernel_resize))
            if i in self.out_indices:
                norm = nn.LayerNorm(channels, eps=1e-6) \
                    if gap_before_final_norm else LayerNorm2d(channels,
                                                              eps=1e-6)
                self.add_module(f'norm{i}', norm)
        self._freeze_stages()
        if deploy:
            self.switch_to_deploy()

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        """``arch`` as a dict of arch_settings' keys (``center_size``
        defaulting to 5), checked."""
        if isinstance(arch, str):
            name = cls.arch_aliases.get(arch.lower(), arch.lower())
            if name not in cls.arch_settings:
                raise ValueError(
                    f'unknown PeLK arch {arch!r}; choose one of '
                    f'{sorted(cls.arch_settings)}, their aliases '
                    f'{sorted(cls.arch_aliases)}, or pass a dict with '
                    f'depths, channels and kernel_sizes')
            return cls.arch_settings[name]
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {arch!r}')
        missing = {'depths', 'channels', 'kernel_sizes'} - set(arch)
        if missing:
            raise ValueError(f'custom arch is missing {sorted(missing)}; it '
                             f'needs depths, channels and kernel_sizes')
        lengths = {
            len(arch[k])
            for k in ('depths', 'channels', 'kernel_sizes')
        }
        if len(lengths) != 1:
            raise ValueError('depths, channels and kernel_sizes of a custom '
                             'arch must have the same length')
        for key in ('depths', 'channels', 'kernel_sizes'):
            bad = [
                v for v in arch[key]
                if isinstance(v, bool) or not isinstance(v, int) or v < 1
            ]
            if bad:
                raise ValueError(f'arch {key} must be positive integers, got '
                                 f'{list(arch[key])}')
        return {'center_size': 5, **arch}

    def _parse_out_indices(self, out_indices) -> List[int]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        parsed = []
        for index in out_indices:
            if not -self.num_stages <= index < self.num_stages:
                raise ValueError(
                    f'out_indices entry {index} is out of range for '
                    f'{self.num_stages} stages')
            parsed.append(index % self.num_stages)
        if len(set(parsed)) != len(parsed):
            raise ValueError(
                f'out_indices {list(out_indices)} name a stage twice (a '
                f'negative index counts from the last of {self.num_stages} '
                f'stages)')
        return parsed

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'PeLK expects images of shape (B, {self.in_channels}, H, W), '
                f'got {tuple(x.shape)}; set in_channels to match the data')
        stride = self.downsample_layers[0][0].stride[0] * 2**(
            self.num_stages - 1)
        if x.shape[-2] < stride or x.shape[-1] < stride:
            raise ValueError(
                f'PeLK needs images of at least {stride}x{stride} (its '
                f'total stride), got {x.shape[-2]}x{x.shape[-1]}; resize '
                f'or pad the input')
        outs = []
        for i, (downsample,
                stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = stage(downsample(x))
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                if self.gap_before_final_norm:
                    outs.append(norm(x.mean([-2, -1])))
                else:
                    outs.append(norm(x))
        return tuple(outs)

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages):
            for module in (self.downsample_layers[i], self.stages[i]):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'PeLK':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def init_weights(self) -> None:
        """Initialize, or load the ``Pretrained`` checkpoint of ``init_cfg``.

        Unlike mmengine's ``Pretrained`` init, which only warns, a file that
        does not fit is refused: it must hold weights under ``prefix`` and
        leave no weight of this backbone unloaded, except the output norms
        of the stages a classifier does not output (``norm0`` to ``norm2``:
        a classifier checkpoint has only its last stage's).

        Raises:
            FileNotFoundError: If that checkpoint is a local file that does
                not exist, saying how to produce it or train without it.
            CheckpointMismatchError: If it holds no weights under
                ``prefix``, or leaves backbone weights unloaded (another
                arch, renamed keys); a ValueError.
        """
        init_cfg: Optional[Union[dict, List[dict]]] = self.init_cfg
        init_cfgs = init_cfg if isinstance(init_cfg, list) else \
            [init_cfg] if init_cfg else []
        pretrained = [cfg for cfg in init_cfgs if cfg['type'] == 'Pretrained']
        for cfg in pretrained:  # before any initialisation is spent
            require_file(
                cfg['checkpoint'], 'init_cfg.checkpoint',
                'point init_cfg.checkpoint at a PeLK backbone file of this '
                "arch (or a classifier checkpoint, with prefix='backbone.'), "
                'or set init_cfg=None to train from scratch.')
        if not pretrained:
            super().init_weights()
            return
        # mmengine loads Pretrained after the others and the children's own
        # init; so do we, with the checks above.
        self.init_cfg = [
            cfg for cfg in init_cfgs if cfg['type'] != 'Pretrained'
        ] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = init_cfg
        for cfg in pretrained:
            load_pretrained(
                self,
                cfg,
                'this PeLK',
                allow_missing=r'norm[0-2]\.',
                allowed_why='a classifier has only its last stage\'s output '
                'norm',
                hint='Check model.backbone.arch and init_cfg.prefix.')

    def switch_to_deploy(self) -> None:
        """Merge every mixer's branches and BNs for inference (see
        :meth:`PeripheralMixer.switch_to_deploy`). Outputs are unchanged in
        eval mode; training after this is not supported."""
        for module in self.modules():
            if isinstance(module, PeripheralMixer):
                module.switch_to_deploy()
        for stage in self.stages:
            stage.pos_embed = None  # folded into each conv's pos_kernel
        self.deploy = True

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """Layer id of a parameter, for layer-wise learning-rate decay.

        The same scheme as mmpretrain's ConvNeXt: the stem is layer 0,
        stages 0 and 1 are layers 1 and 2, stage 2 is split into groups of 3
        blocks, stage 3 and the last downsampling share the last layer.

        Args:
            param_name (str): Name of the parameter.
            prefix (str): Prefix of the backbone's parameters, e.g.
                ``'backbone.'``. Parameters without it (heads) go last.

        Returns:
            tuple[int, int]: The layer id and the number of layers.
        """
        max_layer_id = self._max_layer_id()
        if not param_name.startswith(prefix):
            return max_layer_id + 1, max_layer_id + 2
        parts = param_name[len(prefix):].split('.')
        if parts[0] == 'downsample_layers':
            stage_id = int(parts[1])
            layer_id = {0: 0, 1: 2, 2: 3}.get(stage_id, max_layer_id)
        elif parts[0] == 'stages':
            stage_id = int(parts[1])
            # The shared positional embedding goes with the first block.
            block_id = int(parts[3]) if parts[2] == 'blocks' else 0
            if stage_id < 2:
                layer_id = stage_id + 1
            elif stage_id == 2:
                layer_id = min(3 + block_id // 3, max_layer_id - 1)
            else:
                layer_id = max_layer_id
        else:  # the output norms
            layer_id = max_layer_id + 1
        return layer_id, max_layer_id + 2

    def _max_layer_id(self) -> int:
        """ConvNeXt's ``num_layers``: 12 for deep third stages (S, B), else
        6 (T); the same value SLaK's configs pass."""
        return 12 if self.depths[-2] > 9 else 6

    def get_stage_depth(self, param_name: str, prefix: str = ''):
        """Stage id of a parameter, for stage-wise learning-rate decay.

        ConvNeXt's stage-wise rule, as SLaK's UperNet recipe uses it
        (mmseg's ``get_stage_id_for_convnext``): every downsampling layer,
        the stem included, is 0; stage i (its blocks and its positional
        embedding) is i + 1; everything else (output norms, and parameters
        without ``prefix``: necks and heads) is ``num_layers + 1``, with
        ``num_layers`` 6 for PeLK-T and 12 for S and B. With the decay
        ``rate ** (num_ids - id - 1)`` of the constructor, the heads keep
        the base learning rate and stage i gets ``rate ** (num_layers -
        i)``.

        Args:
            param_name (str): Name of the parameter.
            prefix (str): Prefix of the backbone's parameters.

        Returns:
            tuple[int, int]: The stage id and the number of ids.
        """
        last = self._max_layer_id() + 1
        if not param_name.startswith(prefix):
            return last, last + 1
        parts = param_name[len(prefix):].split('.')
        if parts[0] == 'downsample_layers':
            return 0, last + 1
        if parts[0] == 'stages':
            return int(parts[1]) + 1, last + 1
        return last, last + 1
