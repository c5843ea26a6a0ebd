from .complexity import SPARSE_DENSITY, count_flops, count_params
from .preflight import (check_data_roots, missing_pretrained,
                        missing_pretrained_message, sync_bn_to_bn)

__all__ = [
    'SPARSE_DENSITY', 'count_flops', 'count_params', 'check_data_roots',
    'missing_pretrained', 'missing_pretrained_message', 'sync_bn_to_bn'
]
