from .dynamic_sparsity_hook import DynamicSparsityHook
from .progress_bar_hook import ProgressBarHook

__all__ = ['DynamicSparsityHook', 'ProgressBarHook']
