"""The peripheral convolution: sharing grid, reference and fast paths."""
from .functional import (choose_path, depthwise_conv, depthwise_conv_direct,
                         depthwise_conv_fft, grid_depthwise_conv_box_sums,
                         peripheral_conv2d, peripheral_conv2d_reference,
                         positional_term)
from .grid import expand_by_grid, sharing_grid
from .peripheral_conv import KernelPositionEmbedding, PeripheralConv2d
from .regrid import (RESIZE_MODES, block_mean, infer_center_size,
                     regrid_state_dict, regrid_weight, resize_dense,
                     resize_pos_embed)

__all__ = [
    'sharing_grid', 'expand_by_grid', 'choose_path', 'depthwise_conv',
    'depthwise_conv_direct', 'depthwise_conv_fft',
    'grid_depthwise_conv_box_sums', 'peripheral_conv2d',
    'peripheral_conv2d_reference', 'positional_term',
    'KernelPositionEmbedding', 'PeripheralConv2d', 'RESIZE_MODES',
    'block_mean', 'infer_center_size', 'regrid_state_dict', 'regrid_weight',
    'resize_dense', 'resize_pos_embed'
]
