import pytest
import torch.nn as nn
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

import pelk_mm  # noqa: F401
from pelk_mm.models import PeLK

ARCH = dict(depths=[1, 1, 3, 1], channels=[16, 24, 32, 40],
            kernel_sizes=[13, 11, 9, 7])


class Segmentor(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = PeLK(ARCH, out_indices=(0, 1, 2, 3))
        self.decode_head = nn.Conv2d(40, 5, 1)


def build(paramwise_cfg, model):
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='pelk_mm.LayerDecayOptimWrapperConstructor',
        optim_wrapper_cfg=dict(
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)),
        paramwise_cfg=paramwise_cfg))
    optimizer = constructor(model).optimizer
    return {g['param_name']: g for g in optimizer.param_groups}


def test_stage_wise_decay():
    groups = build(dict(decay_rate=0.9, decay_type='stage_wise'),
                   Segmentor())
    expected = {  # 6 depths: stem 0, stages 1-4, rest 5
        'backbone.downsample_layers.0.0.weight': 0.9**5,
        'backbone.stages.0.blocks.0.gamma': 0.9**4,
        'backbone.downsample_layers.1.1.weight': 0.9**3,
        'backbone.stages.1.pos_embed.weight': 0.9**3,
        'backbone.stages.2.blocks.2.mixer.large.weight': 0.9**2,
        'backbone.stages.3.blocks.0.pointwise_conv1.weight': 0.9,
        'backbone.norm3.weight': 1.0,
        'decode_head.weight': 1.0,
    }
    for name, scale in expected.items():
        assert groups[name]['lr'] == pytest.approx(1e-4 * scale), name
        assert groups[name]['lr_scale'] == pytest.approx(scale), name
    assert len(groups) == sum(1 for _ in Segmentor().parameters())


def test_layer_wise_decay_uses_get_layer_depth():
    model = Segmentor()
    groups = build(dict(decay_rate=0.7), model)
    for name, group in groups.items():
        depth, num = model.backbone.get_layer_depth(name, 'backbone.')
        assert group['layer_id'] == depth
        assert group['lr'] == pytest.approx(1e-4 * 0.7**(num - depth - 1))
    assert groups['decode_head.weight']['lr'] == pytest.approx(1e-4)
    assert groups['backbone.downsample_layers.0.0.weight']['lr'] == \
        pytest.approx(1e-4 * 0.7**7)


def test_combines_with_mmengine_paramwise_options():
    groups = build(dict(decay_rate=0.9, decay_type='stage_wise',
                        norm_decay_mult=0.,
                        custom_keys={'pos_embed': dict(lr_mult=2.)}),
                   Segmentor())
    assert groups['backbone.norm3.weight']['weight_decay'] == 0.
    assert groups['backbone.stages.0.blocks.0.pointwise_conv1.weight'][
        'weight_decay'] == 0.05
    assert groups['backbone.stages.1.pos_embed.weight']['lr'] == \
        pytest.approx(1e-4 * 2 * 0.9**3)


def test_refuses_backbones_without_depth_and_unknown_types():
    model = nn.Module()
    model.backbone = nn.Conv2d(3, 3, 1)
    with pytest.raises(TypeError, match='get_stage_depth'):
        build(dict(decay_rate=0.9, decay_type='stage_wise'), model)
    with pytest.raises(ValueError, match='decay_type'):
        build(dict(decay_rate=0.9, decay_type='block_wise'), Segmentor())
