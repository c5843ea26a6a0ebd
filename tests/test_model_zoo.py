import glob
import os.path as osp

import pytest
from modelindex import load

from pelk_mm.model_zoo import MIM_ROOT

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def indexed_models():
    index = load(osp.join(REPO, 'model-index.yml'))
    index.build_models_with_collections()
    return index.models


def test_every_config_but_the_demos_is_indexed_once():
    configs = {
        osp.relpath(path, REPO)
        for path in glob.glob(osp.join(REPO, 'configs', '*.py'))
        if not path.endswith('_demo.py')
    }
    models = indexed_models()
    assert sorted(m.config for m in models) == sorted(configs)
    assert all(m.name == osp.basename(m.config)[:-3] for m in models)
    for model in models:
        assert model.weights is None  # none trained yet
        assert model.in_collection in ('PeLK', 'UperNet-PeLK',
                                       'Cascade-Mask-RCNN-PeLK')


def test_indexed_results_are_the_papers():
    models = {m.name: m for m in indexed_models()}

    def metric(name, key):
        return {
            k: v
            for r in models[name].results
            for k, v in r.metrics.items()
        }[key]

    assert metric('pelk_t_in1k', 'Top 1 Accuracy') == 82.6
    assert metric('pelk_b101_in1k-384', 'Top 1 Accuracy') == 85.8
    assert not models['pelk_b101_in1k'].results  # not in the paper
    assert metric('upernet_pelk_t_ade20k', 'mIoU') == 48.1
    assert metric('cascade_mask_rcnn_pelk_t_coco', 'box AP') == 51.4
    assert metric('cascade_mask_rcnn_pelk_t_coco', 'mask AP') == 44.6
    assert models['pelk_t_in1k'].metadata.parameters == 29e6


def test_installed_package_carries_the_index():
    assert osp.samefile(
        osp.join(MIM_ROOT, 'model-index.yml'),
        osp.join(REPO, 'model-index.yml'))


def test_mmpretrain_finds_the_classifiers_by_name():
    import torch
    from mmpretrain import get_model, list_models

    import pelk_mm  # noqa: F401
    assert list_models('pelk*') == [
        'pelk_b101_in1k', 'pelk_b101_in1k-384', 'pelk_b_in1k',
        'pelk_b_in1k-384', 'pelk_s_in1k', 'pelk_t_in1k'
    ]
    model = get_model('pelk_t_in1k', pretrained=False)
    assert type(model.backbone).__name__ == 'PeLK'
    assert model.backbone.kernel_sizes == [51, 49, 47, 13]
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 1000)
    with pytest.raises(ValueError, match='Failed to find model'):
        get_model('pelk_x_in1k')
