"""pelk_mm: PeLK (peripheral convolution) for OpenMMLab 2.x.

Import it from any OpenMMLab config with::

    custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)

and refer to its modules by scoped names, e.g. ``type='pelk_mm.PeLK'``.
"""
from . import engine, models, ops  # noqa: F401  (registers the modules)
from .version import __version__

__all__ = ['__version__']
