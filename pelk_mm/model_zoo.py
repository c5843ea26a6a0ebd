"""pelk_mm's ImageNet models in mmpretrain's model zoo.

``import pelk_mm`` registers the classification entries of pelk_mm's model
index (``configs/metafiles/classification.yml``, installed under
``pelk_mm/.mim``) with :class:`mmpretrain.apis.ModelHub`, so that
``mmpretrain.list_models('pelk*')`` lists them and
``mmpretrain.get_model('pelk_t_in1k')`` builds one. The segmentation and
detection entries are indexed too (``model-index.yml``), for mim and for
people, but mmpretrain's hub builds classifiers only.

No weights are released (the paper released none). ``get_model(name,
pretrained=True)`` therefore raises an error saying so and how to make
them, instead of returning random weights with a warning: the registered
entries point at ``pelk_mm-unreleased://NAME``, a checkpoint scheme whose
loader raises. The model index itself lists no weights.
"""
import os.path as osp

from mmengine.runner import CheckpointLoader

MIM_ROOT = osp.join(osp.dirname(osp.abspath(__file__)), '.mim')
CLASSIFICATION_INDEX = osp.join(MIM_ROOT, 'configs', 'metafiles',
                                'classification.yml')


def register_classification_models() -> bool:
    """Register the ImageNet models with mmpretrain's ModelHub (once).

    Returns:
        bool: Whether they are registered: False where mmpretrain is not
        installed, or the package was installed without its configs.
    """
    if not osp.isfile(CLASSIFICATION_INDEX):
        return False
    try:
        from mmpretrain.apis import ModelHub
    except ImportError:
        return False
    if not ModelHub.has('pelk_t_in1k'):
        ModelHub.register_model_index(
            CLASSIFICATION_INDEX, config_prefix=MIM_ROOT)
        for name, model in ModelHub._models_dict.items():
            if name.startswith('pelk_') and model.weights is None:
                model.weights = UNRELEASED + name
    return True


#: The scheme of weights that are not released.
UNRELEASED = 'pelk_mm-unreleased://'


def _refuse_unreleased(filename: str, map_location=None):
    name = filename[len(UNRELEASED):]
    raise RuntimeError(
        f'no ImageNet weights of {name} are released (the paper released '
        f'none, and pelk_mm has trained none); train them with '
        f'configs/{name}.py (tools/train.py), then pass the checkpoint: '
        f"get_model('{name}', pretrained='work_dirs/{name}/epoch_300.pth'), "
        f'or build it untrained with pretrained=False')


CheckpointLoader.register_scheme(
    prefixes=UNRELEASED, loader=_refuse_unreleased, force=True)
