"""Engine parts of the plugin (checkpoint loading; hooks; optimisers)."""
from .checkpoint import load_local_checkpoint

__all__ = ['load_local_checkpoint']
