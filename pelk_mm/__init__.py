"""pelk_mm: PeLK (peripheral convolution) for OpenMMLab 2.x.

Import it from any OpenMMLab config with::

    custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)

and refer to its modules by scoped names, e.g. ``type='pelk_mm.PeLK'``.
Its ImageNet models are in mmpretrain's model zoo
(``mmpretrain.get_model('pelk_t_in1k')``, :mod:`pelk_mm.model_zoo`).
"""
from . import engine, models, ops, runtime  # noqa: F401 (registers them)
from .model_zoo import register_classification_models
from .version import __version__

register_classification_models()

__all__ = ['__version__']
