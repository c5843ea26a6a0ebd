"""Analyses of PeLK models: parameter and FLOP counts as the paper reports
them, and the effective receptive field."""
from .complexity import (ImageNetClassifier, config_complexity, count_flops,
                         count_params)
from .erf import (THRESHOLDS, area_ratio, area_ratios,
                  effective_receptive_field, erf_of_batch, log_scaled,
                  save_heatmap)

__all__ = [
    'ImageNetClassifier', 'config_complexity', 'count_flops', 'count_params',
    'THRESHOLDS', 'area_ratio', 'area_ratios', 'effective_receptive_field',
    'erf_of_batch', 'log_scaled', 'save_heatmap'
]
