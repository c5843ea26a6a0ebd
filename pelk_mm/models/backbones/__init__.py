from .pelk import PeLK

__all__ = ['PeLK']
