from .dynamic_sparsity_hook import DynamicSparsityHook

__all__ = ['DynamicSparsityHook']
