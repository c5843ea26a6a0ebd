"""The peripheral convolution: sharing grid, reference and fast paths."""
from .functional import (depthwise_conv, grid_depthwise_conv,
                         peripheral_conv2d, peripheral_conv2d_reference,
                         positional_term)
from .grid import expand_by_grid, sharing_grid
from .paths import PATHS, PathRefused, choose_path, tracing
from .paths.box_sums import grid_depthwise_conv_box_sums
from .paths.direct import depthwise_conv_direct
from .paths.fft import depthwise_conv_fft, fft_size
from .peripheral_conv import KernelPositionEmbedding, PeripheralConv2d
from .regrid import (RESIZE_MODES, block_mean, infer_center_size,
                     regrid_state_dict, regrid_weight, resize_dense,
                     resize_pos_embed)
from .switches import forced_path

__all__ = [
    'sharing_grid', 'expand_by_grid', 'PATHS', 'PathRefused', 'choose_path',
    'depthwise_conv', 'depthwise_conv_direct', 'depthwise_conv_fft',
    'fft_size', 'forced_path', 'grid_depthwise_conv',
    'grid_depthwise_conv_box_sums', 'peripheral_conv2d',
    'peripheral_conv2d_reference', 'positional_term',
    'KernelPositionEmbedding', 'PeripheralConv2d', 'RESIZE_MODES',
    'block_mean', 'infer_center_size', 'regrid_state_dict', 'regrid_weight',
    'resize_dense', 'resize_pos_embed', 'tracing'
]
