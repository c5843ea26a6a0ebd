"""pelk_mm's ImageNet models in mmpretrain's model zoo.

``import pelk_mm`` registers the classification entries of pelk_mm's model
index (``configs/metafiles/classification.yml``, installed under
``pelk_mm/.mim``) with :class:`mmpretrain.apis.ModelHub`, so that
``mmpretrain.list_models('pelk*')`` lists them and
``mmpretrain.get_model('pelk_t_in1k')`` builds one. The segmentation and
detection entries are indexed too (``model-index.yml``), for mim and for
people, but mmpretrain's hub builds classifiers only.
"""
import os.path as osp

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
    return True
