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


def test_every_paper_config_is_indexed_once():
    configs = {
        osp.relpath(path, REPO)
        for path in glob.glob(osp.join(REPO, 'configs', '*.py'))
    }
    models = indexed_models()
    assert sorted(m.config for m in models) == sorted(configs)
    assert all(m.name == osp.basename(m.config)[:-3] for m in models)
    for model in models:
        assert model.weights is None  # none trained yet
        assert model.in_collection in ('PeLK', 'UperNet-PeLK',
                                       'Cascade-Mask-RCNN-PeLK')


def test_every_paper_model_has_results_and_counts():
    """The index is the one copy of the paper's numbers: a model the paper
    reports has its counts and results there; one it does not (PeLK-B-101
    at 224) has neither."""
    for model in indexed_models():
        if not model.results:
            assert not {'FLOPs', 'Parameters'} & set(model.metadata.data)
            continue
        assert model.metadata.parameters > 1e7 and model.metadata.flops > 1e9
        metrics = {k for r in model.results for k in r.metrics}
        assert metrics in ({'Top 1 Accuracy'}, {'mIoU'}, {'box AP', 'mask AP'
                                                          }), model.name


def test_the_family_readme_shows_the_index(run_tool, tmp_path):
    run_tool('tools/misc/model_zoo_table.py', '--check', 'configs/README.md')
    with open(osp.join(REPO, 'configs', 'README.md')) as f:
        lines = f.read().splitlines()
    row = [
        i for i, line in enumerate(lines)
        if line.startswith('| upernet_pelk_t_ade20k |')
    ][0]
    lines[row] = lines[row].replace('| mIoU ', '| mIoU 0')  # drifted
    drifted = '\n'.join(lines)
    (tmp_path / 'README.md').write_text(drifted)
    proc = run_tool(
        'tools/misc/model_zoo_table.py',
        '--check',
        str(tmp_path / 'README.md'),
        check=False)
    assert proc.returncode == 1
    assert 'upernet_pelk_t_ade20k' in proc.stderr.splitlines()[-2]


def test_installed_package_carries_the_index():
    assert osp.samefile(
        osp.join(MIM_ROOT, 'model-index.yml'),
        osp.join(REPO, 'model-index.yml'))


def test_mmpretrain_finds_the_classifiers_by_name():
    import torch
    from mmpretrain import get_model, list_models

    import pelk_mm  # noqa: F401

    # The index's classifiers, by their names there.
    assert list_models('pelk*') == sorted(
        m.name for m in indexed_models()
        if m.config.endswith('_in1k.py') or m.config.endswith('_in1k-384.py'))
    assert {'pelk_t_in1k', 'pelk_b101_in1k-384'} <= set(list_models('pelk*'))
    model = get_model('pelk_t_in1k', pretrained=False)
    assert type(model.backbone).__name__ == 'PeLK'
    assert model.backbone.kernel_sizes == [51, 49, 47, 13]
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 1000)
    with pytest.raises(ValueError, match='Failed to find model'):
        get_model('pelk_x_in1k')


def test_pretrained_true_says_no_weights_are_released(tmp_path):
    """Not random weights with a warning: an error that says none are
    released and how to make them; a checkpoint of one's own loads."""
    import torch
    from mmpretrain import get_model

    import pelk_mm  # noqa: F401
    with pytest.raises(
            RuntimeError,
            match='no ImageNet weights of '
            'pelk_t_in1k are released.*configs/pelk_t_in1k.py'):
        get_model('pelk_t_in1k', pretrained=True)
    model = get_model('pelk_t_in1k', pretrained=False)
    path = tmp_path / 'mine.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    loaded = get_model('pelk_t_in1k', pretrained=str(path))
    key = 'backbone.stages.0.blocks.0.mixer.large.weight'
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])
