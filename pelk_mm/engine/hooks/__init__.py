from .atomic_checkpoint_hook import AtomicCheckpointHook
from .dynamic_sparsity_hook import DynamicSparsityHook
from .finite_loss_hook import FiniteLossHook
from .progress_bar_hook import ProgressBarHook
from .random_state_hook import RandomStateHook

__all__ = [
    'AtomicCheckpointHook', 'DynamicSparsityHook', 'FiniteLossHook',
    'ProgressBarHook', 'RandomStateHook'
]
