"""``type='pelk_mm.PeLK'`` builds from mmseg, mmdet and mmpretrain configs."""
import textwrap

import pytest
import torch
from conftest import needs_mmcv_ops
from mmengine.config import Config
from mmengine.registry import init_default_scope

pytestmark = needs_mmcv_ops

BACKBONE = ("dict(type='pelk_mm.PeLK', arch=dict(depths=[1, 1, 1, 1], "
            "channels=[16, 24, 32, 40], kernel_sizes=[13, 11, 9, 7]), "
            "out_indices={out}, gap_before_final_norm={gap})")

CONFIGS = {
    'mmseg':
    """
        default_scope = 'mmseg'
        custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)
        model = dict(
            type='EncoderDecoder',
            data_preprocessor=dict(type='SegDataPreProcessor', size=(64, 64)),
            backbone={backbone},
            decode_head=dict(type='FCNHead', in_channels=40, in_index=3,
                             channels=16, num_convs=1, num_classes=5,
                             norm_cfg=dict(type='BN')))
    """,
    'mmdet':
    """
        default_scope = 'mmdet'
        custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)
        model = dict(
            type='RetinaNet',
            data_preprocessor=dict(type='DetDataPreprocessor',
                                   pad_size_divisor=32),
            backbone={backbone},
            neck=dict(type='FPN', in_channels=[16, 24, 32, 40],
                      out_channels=16, num_outs=4),
            bbox_head=dict(
                type='RetinaHead', num_classes=3, in_channels=16,
                feat_channels=16, stacked_convs=1,
                anchor_generator=dict(
                    type='AnchorGenerator', octave_base_scale=4,
                    scales_per_octave=1, ratios=[1.0],
                    strides=[4, 8, 16, 32]),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder')))
    """,
    'mmpretrain':
    """
        default_scope = 'mmpretrain'
        custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)
        model = dict(
            type='ImageClassifier',
            backbone={backbone},
            head=dict(type='LinearClsHead', num_classes=10, in_channels=40))
    """,
}


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet', 'mmpretrain'])
def test_build_from_config(scope, tmp_path):
    dense = scope != 'mmpretrain'
    backbone = BACKBONE.format(
        out='(0, 1, 2, 3)' if dense else '(3, )', gap=not dense)
    path = tmp_path / f'{scope}_cfg.py'
    path.write_text(textwrap.dedent(CONFIGS[scope]).format(backbone=backbone))
    cfg = Config.fromfile(str(path))  # runs custom_imports
    init_default_scope(cfg.default_scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(cfg.model)
    model.init_weights()
    assert type(model.backbone).__module__ == 'pelk_mm.models.backbones.pelk'
    feats = model.extract_feat(torch.randn(2, 3, 64, 64))
    if scope == 'mmpretrain':
        assert feats[-1].shape == (2, 40)
    elif scope == 'mmseg':
        assert [f.shape[1] for f in feats] == [16, 24, 32, 40]
    else:
        assert [f.shape for f in feats][0] == (2, 16, 16, 16)


def test_plain_name_needs_the_scope():
    """Inside another scope the plugin's modules need the ``pelk_mm.``
    prefix."""
    from mmseg.registry import MODELS

    import pelk_mm  # noqa: F401
    init_default_scope('mmseg')
    assert MODELS.get('pelk_mm.PeLK') is not None
    assert MODELS.get('PeLK') is None
