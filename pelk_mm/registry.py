"""The ``pelk_mm`` registries, children of MMEngine's root registries.

Because they are children of the root registries, every OpenMMLab codebase
(mmseg, mmdet, mmpretrain) finds our modules by their scoped name, e.g.
``type='pelk_mm.PeLK'``, once ``pelk_mm`` is imported (``custom_imports``).
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry

MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='pelk_mm',
    locations=['pelk_mm.models'])
HOOKS = Registry(
    'hook',
    parent=MMENGINE_HOOKS,
    scope='pelk_mm',
    locations=['pelk_mm.engine', 'pelk_mm.runtime'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='pelk_mm',
    locations=['pelk_mm.engine'])
