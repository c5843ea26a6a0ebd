from .complexity import SPARSE_DENSITY, count_flops, count_params

__all__ = ['SPARSE_DENSITY', 'count_flops', 'count_params']
