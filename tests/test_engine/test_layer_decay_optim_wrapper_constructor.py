import os.path as osp

import pytest
import torch.nn as nn
from conftest import metafile_models
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

import pelk_mm  # noqa: F401
from pelk_mm.models import PeLK

ARCH = dict(
    depths=[1, 1, 3, 1],
    channels=[16, 24, 32, 40],
    kernel_sizes=[13, 11, 9, 7])


class Segmentor(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = PeLK(ARCH, out_indices=(0, 1, 2, 3))
        self.decode_head = nn.Conv2d(40, 5, 1)


def build(paramwise_cfg, model):
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(
            type='pelk_mm.LayerDecayOptimWrapperConstructor',
            optim_wrapper_cfg=dict(
                optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)),
            paramwise_cfg=paramwise_cfg))
    optimizer = constructor(model).optimizer
    return {g['param_name']: g for g in optimizer.param_groups}


def convnext_name(name: str) -> str:
    """Our parameter name in ConvNeXt's layout, for ConvNeXt's id rules:
    blocks are ``stages.i.j`` there, and the stage's positional embedding
    (which ConvNeXt lacks) goes with the stage's first block."""
    parts = name.split('.')
    if parts[:2] == ['backbone', 'stages']:
        if parts[3] == 'blocks':
            del parts[3]
        elif parts[3] == 'pos_embed':
            parts.insert(3, '0')
    return '.'.join(parts)


def test_stage_wise_decay_is_convnext_rule():
    """SLaK's UperNet rule: mmseg's get_stage_id_for_convnext with
    num_layers 6 (PeLK-T's depths; 12 for deep third stages), scale
    rate ** (num_layers + 1 - id)."""
    from mmseg.engine.optimizers.layer_decay_optimizer_constructor import \
        get_stage_id_for_convnext
    groups = build(dict(decay_rate=0.9, decay_type='stage_wise'), Segmentor())
    for name, group in groups.items():
        stage_id = get_stage_id_for_convnext(convnext_name(name), 6 + 2)
        assert group['lr_scale'] == pytest.approx(0.9**(6 + 1 - stage_id))
        assert group['lr'] == pytest.approx(1e-4 * 0.9**(6 + 1 - stage_id))
    # What the rule means: every downsampling layer (stem too) at id 0,
    # stage i at i + 1, the rest at 7.
    assert groups['backbone.downsample_layers.2.1.weight']['lr_scale'] == \
        pytest.approx(0.9**7)
    assert groups['backbone.stages.1.pos_embed.weight']['lr_scale'] == \
        pytest.approx(0.9**5)
    assert groups['backbone.norm3.weight']['lr_scale'] == 1.0
    assert groups['decode_head.weight']['lr_scale'] == 1.0
    assert len(groups) == sum(1 for _ in Segmentor().parameters())


def test_layer_wise_decay_is_convnext_rule():
    """SLaK's Cascade Mask R-CNN rule: mmdet's get_layer_id_for_convnext
    with num_layers 6, scale rate ** (num_layers + 1 - id)."""
    from mmdet.engine.optimizers.layer_decay_optimizer_constructor import \
        get_layer_id_for_convnext
    model = Segmentor()
    groups = build(dict(decay_rate=0.7), model)
    for name, group in groups.items():
        layer_id = get_layer_id_for_convnext(convnext_name(name), 6)
        assert group['layer_id'] == layer_id, name
        assert group['lr'] == pytest.approx(1e-4 * 0.7**(6 + 1 - layer_id))
    assert groups['decode_head.weight']['lr'] == pytest.approx(1e-4)
    assert groups['backbone.downsample_layers.0.0.weight']['lr'] == \
        pytest.approx(1e-4 * 0.7**7)


def test_combines_with_mmengine_paramwise_options():
    groups = build(
        dict(
            decay_rate=0.9,
            decay_type='stage_wise',
            norm_decay_mult=0.,
            custom_keys={'pos_embed': dict(lr_mult=2.)}), Segmentor())
    assert groups['backbone.norm3.weight']['weight_decay'] == 0.
    assert groups['backbone.stages.0.blocks.0.pointwise_conv1.weight'][
        'weight_decay'] == 0.05
    assert groups['backbone.stages.1.pos_embed.weight']['lr'] == \
        pytest.approx(1e-4 * 2 * 0.9**5)


def test_an_optimizer_step_of_its_groups_compiles():
    """Its groups are plain dicts, which torch.compile traces (mmengine's
    compile=True compiles train_step, optimizer step included); mmengine's
    constructor leaves ConfigDicts, on which dynamo stops."""
    import torch
    from mmengine.config import ConfigDict
    model = nn.Linear(4, 2)
    model.get_layer_depth = lambda name, prefix: (0, 1)
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(
            type='pelk_mm.LayerDecayOptimWrapperConstructor',
            # as the runner passes it, from a config file
            optim_wrapper_cfg=ConfigDict(
                optimizer=dict(type='AdamW', lr=1e-2)),
            paramwise_cfg=dict(decay_rate=0.9)))
    optim_wrapper = constructor(model)
    assert {type(g) for g in optim_wrapper.optimizer.param_groups} == {dict}

    def step(x):
        loss = model(x).pow(2).mean()
        optim_wrapper.update_params(loss)
        return loss

    torch._dynamo.reset()
    compiled = torch.compile(step, backend='eager')
    before = model.weight.detach().clone()
    compiled(torch.randn(3, 4))
    assert not torch.equal(model.weight, before)


def test_refuses_backbones_without_depth_and_unknown_types():
    model = nn.Module()
    model.backbone = nn.Conv2d(3, 3, 1)
    with pytest.raises(TypeError, match='get_stage_depth'):
        build(dict(decay_rate=0.9, decay_type='stage_wise'), model)
    with pytest.raises(ValueError, match='decay_type'):
        build(dict(decay_rate=0.9, decay_type='block_wise'), Segmentor())


@pytest.mark.parametrize('name', [
    osp.basename(model['Config']) for task in ('segmentation', 'detection')
    for model in metafile_models(task)
])
def test_every_parameter_of_the_configs_follows_slak(name, load_config):
    """The learning rate and weight decay of every parameter of the seg and
    det recipes, against SLaK's rules computed by mmseg's / mmdet's own
    ConvNeXt functions: lr * rate ** (num_layers + 1 - id), with SLaK's
    num_layers (6 for a third stage of 9 blocks, T; 12 for 27, S and B),
    and no weight decay on 1-D parameters and biases (SLaK) nor on the
    positional embedding (our choice)."""
    from mmdet.engine.optimizers.layer_decay_optimizer_constructor import \
        get_layer_id_for_convnext
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    from mmseg.engine.optimizers.layer_decay_optimizer_constructor import \
        get_stage_id_for_convnext
    cfg = load_config(name)
    cfg.model.backbone.init_cfg = None
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    num_layers = 12 if model.backbone.depths[2] > 9 else 6
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    paramwise = cfg.optim_wrapper.paramwise_cfg
    rate, base_lr = paramwise.decay_rate, cfg.optim_wrapper.optimizer.lr
    if paramwise.decay_type == 'stage_wise':
        ids = lambda n: get_stage_id_for_convnext(n, num_layers + 2)  # noqa
    else:
        ids = lambda n: get_layer_id_for_convnext(n, num_layers)  # noqa
    groups = {g['param_name']: g for g in optimizer.param_groups}
    params = dict(model.named_parameters())
    assert set(groups) == set(params)
    for param_name, param in params.items():
        group = groups[param_name]
        scale = rate**(num_layers + 1 - ids(convnext_name(param_name)))
        assert group['lr'] == pytest.approx(base_lr * scale), param_name
        exempt = param.ndim == 1 or param_name.endswith('.bias') or \
            'pos_embed' in param_name
        assert group['weight_decay'] == (0. if exempt else 0.05), param_name
