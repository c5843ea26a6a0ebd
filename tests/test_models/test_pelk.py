import copy

import pytest
import torch
import torch.nn as nn
from conftest import needs_custom_ops, paper_models

from pelk_mm.analysis import ImageNetClassifier, count_flops, count_params
from pelk_mm.models import SPARSE_DENSITY, PeLK, PeripheralMixer
from pelk_mm.ops import PeripheralConv2d
from pelk_mm.ops.paths import relative_error

# A small custom arch so that the behaviour tests run in seconds.
SMALL_ARCH = dict(
    depths=[1, 1, 2, 1],
    channels=[16, 24, 32, 40],
    kernel_sizes=[13, 11, 9, 7])


def projection_loss(outs, seed=0):
    """A fixed random projection of the outputs: a loss whose gradient
    reaches every weight (the sum of a LayerNorm output with unit weight
    and zero bias, PeLK's pooled output, is identically zero)."""
    generator = torch.Generator().manual_seed(seed)
    return sum(
        (out *
         torch.randn(out.shape, generator=generator, dtype=out.dtype)).sum()
        for out in outs)


@pytest.mark.parametrize('arch, channels', [
    ('tiny', [124, 249, 499, 998]),
    ('t', [124, 249, 499, 998]),
    ('small', [124, 249, 499, 998]),
    ('base', [166, 332, 665, 1331]),
    ('b101', [166, 332, 665, 1331]),
])
def test_output_shapes_every_arch(arch, channels):
    model = PeLK(arch, out_indices=(0, 1, 2, 3), gap_before_final_norm=False)
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, channels[0], 16, 24),
                                              (1, channels[1], 8, 12),
                                              (1, channels[2], 4, 6),
                                              (1, channels[3], 2, 3)]


def test_arch_settings_match_the_paper():
    for name in ('tiny', 'small', 'base'):
        assert PeLK.arch_settings[name]['kernel_sizes'] == [51, 49, 47, 13]
    assert PeLK.arch_settings['base-101']['kernel_sizes'] == [101, 69, 67, 13]
    assert PeLK.arch_settings['base-101']['center_size'] == 7
    assert PeLK.arch_settings['tiny']['depths'] == [3, 3, 9, 3]
    assert PeLK.arch_settings['small']['depths'] == [3, 3, 27, 3]
    model = PeLK('tiny')
    assert [len(s.blocks) for s in model.stages] == [3, 3, 9, 3]
    mixer = model.stages[0].blocks[0].mixer
    assert mixer.conv_channels == 46  # 3/8 of 124
    assert mixer.large.grid == [9, 8, 4, 2, 1, 1, 1, 1, 1, 2, 4, 8, 9]
    assert model.stages[0].pos_embed.weight.shape == (46, 51, 51)


def test_out_indices_and_gap():
    x = torch.randn(2, 3, 64, 64)
    model = PeLK(SMALL_ARCH)  # default: last stage, pooled
    outs = model(x)
    assert len(outs) == 1 and outs[0].shape == (2, 40)

    model = PeLK(SMALL_ARCH, out_indices=(0, 1, 2, 3))
    assert [o.shape for o in model(x)] == [(2, 16), (2, 24), (2, 32), (2, 40)]

    model = PeLK(SMALL_ARCH, out_indices=(-3, 3), gap_before_final_norm=False)
    assert [o.shape for o in model(x)] == [(2, 24, 8, 8), (2, 40, 2, 2)]
    assert hasattr(model, 'norm1') and not hasattr(model, 'norm0')


def test_init_is_slak_truncated_normal_for_every_conv():
    """SLaK: std 0.02 for every conv weight, the large kernels included
    (nn.Conv2d's own init would give the 51x51 block weights +-1/51)."""
    torch.manual_seed(0)
    model = PeLK('tiny')
    model.init_weights()
    convs = [m for m in model.modules() if isinstance(m, PeripheralConv2d)]
    weights = torch.cat([c.weight.detach().flatten() for c in convs])
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    assert weights.mean().abs().item() < 1e-3
    stem = model.downsample_layers[0][0].weight
    assert stem.std().item() == pytest.approx(0.02, rel=0.05)


def test_drop_path_and_layer_scale():
    model = PeLK(SMALL_ARCH, drop_path_rate=0.3, layer_scale_init_value=0.)
    blocks = [b for s in model.stages for b in s.blocks]
    assert isinstance(blocks[0].drop_path, nn.Identity)
    assert blocks[-1].drop_path.drop_prob == pytest.approx(0.3)
    assert all(b.gamma is None for b in blocks)
    model = PeLK(SMALL_ARCH, layer_scale_init_value=1e-6)
    assert torch.all(model.stages[0].blocks[0].gamma == 1e-6)


def test_frozen_stages_and_norm_eval():
    model = PeLK(SMALL_ARCH, frozen_stages=2, norm_eval=True)
    model.train()
    for i in range(2):
        for module in (model.downsample_layers[i], model.stages[i]):
            assert not module.training
            assert all(not p.requires_grad for p in module.parameters())
    assert model.stages[2].training
    assert all(p.requires_grad for p in model.stages[2].parameters())
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)
    # A frozen stage keeps its weights through a training step.
    torch.manual_seed(0)
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1.)
    projection_loss(model(torch.randn(2, 3, 64, 64))).backward()
    optimizer.step()
    after = model.state_dict()
    for key in before:
        if key.startswith(('downsample_layers.0.', 'downsample_layers.1.',
                           'stages.0.', 'stages.1.')):
            assert torch.equal(after[key], before[key]), key
    # ... while the step did move the stages that are not frozen.
    assert not torch.equal(after['stages.2.pos_embed.weight'],
                           before['stages.2.pos_embed.weight'])
    assert not torch.equal(after['stages.3.blocks.0.pointwise_conv1.weight'],
                           before['stages.3.blocks.0.pointwise_conv1.weight'])


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    model = PeLK(
        SMALL_ARCH,
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,
        layer_scale_init_value=1.)
    model_cp = copy.deepcopy(model)
    for block in (b for s in model_cp.stages for b in s.blocks):
        block.with_cp = True
    x = torch.randn(2, 3, 64, 64)
    for m in (model, model_cp):
        sum(o.square().sum() for o in m(x)).backward()
    for (name, p), p_cp in zip(model.named_parameters(),
                               model_cp.parameters()):
        assert p.grad is not None, name
        assert torch.allclose(p.grad, p_cp.grad, rtol=1e-4, atol=1e-6), name


def test_shared_positional_embedding_gets_one_gradient_per_stage():
    """One embedding per stage, referenced by every block of the stage: its
    gradient is the sum of the blocks' contributions, checked against a
    float64 finite difference of the loss along a random direction."""
    torch.manual_seed(0)
    model = PeLK(SMALL_ARCH, layer_scale_init_value=1.).double()
    names = [n for n, _ in model.named_parameters() if 'pos_embed' in n]
    assert names == [f'stages.{i}.pos_embed.weight' for i in range(4)]
    for stage in model.stages:
        assert all(block.mixer.large.pos_embed is stage.pos_embed.weight
                   for block in stage.blocks)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    model.eval()  # BN with running statistics: the loss is smooth in h
    projection_loss(model(x)).backward()
    step = 1e-5
    for stage in model.stages:
        weight = stage.pos_embed.weight
        direction = torch.randn_like(weight)
        with torch.no_grad():
            weight.add_(step * direction)
            loss_plus = projection_loss(model(x))
            weight.sub_(2 * step * direction)
            loss_minus = projection_loss(model(x))
            weight.add_(step * direction)
        numeric = (loss_plus - loss_minus) / (2 * step)
        analytic = (weight.grad * direction).sum()
        assert numeric.abs() > 1e-6  # the embedding matters to the loss
        assert analytic.item() == pytest.approx(numeric.item(), rel=1e-6)


def test_switch_to_deploy_keeps_outputs():
    torch.manual_seed(0)
    model = PeLK(
        SMALL_ARCH,
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,
        layer_scale_init_value=1.)
    model.train()
    for _ in range(2):
        model(torch.randn(2, 3, 64, 64))
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model.switch_to_deploy()
        outs = model(x)
    assert all(m.deploy for m in model.modules()
               if isinstance(m, PeripheralMixer))
    for out, exp in zip(outs, expected):
        assert relative_error(out, exp) < 1e-4


@pytest.mark.parametrize('pos_embed', [True, False])
def test_deploy_true_builds_what_switch_to_deploy_makes(pos_embed):
    """PeLK(deploy=True) has exactly the entries of a deployed model, loads
    its state dict strictly and gives its outputs."""
    torch.manual_seed(0)
    kwargs = dict(
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,
        layer_scale_init_value=1.,
        pos_embed=pos_embed)
    trained = PeLK(SMALL_ARCH, **kwargs)
    trained.train()
    trained(torch.randn(2, 3, 64, 64))  # BN statistics
    trained.eval()
    trained.switch_to_deploy()
    deployed = PeLK(SMALL_ARCH, deploy=True, **kwargs).eval()
    assert deployed.deploy
    state = trained.state_dict()
    assert set(deployed.state_dict()) == set(state)
    assert not any('norm' in k and 'mixer' in k for k in state)
    deployed.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        for out, expected in zip(deployed(x), trained(x)):
            assert torch.equal(out, expected)


def test_get_layer_depth():
    model = PeLK('tiny')
    assert model.get_layer_depth('backbone.downsample_layers.0.0.weight',
                                 'backbone.') == (0, 8)
    assert model.get_layer_depth('backbone.stages.0.blocks.2.gamma',
                                 'backbone.') == (1, 8)
    assert model.get_layer_depth('backbone.stages.1.pos_embed.weight',
                                 'backbone.') == (2, 8)
    assert model.get_layer_depth('backbone.stages.2.blocks.8.norm.weight',
                                 'backbone.') == (5, 8)
    assert model.get_layer_depth('backbone.stages.3.blocks.0.gamma',
                                 'backbone.') == (6, 8)
    assert model.get_layer_depth('backbone.norm3.weight',
                                 'backbone.') == (7, 8)
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (7, 8)
    small = PeLK('small')
    assert small.get_layer_depth('stages.2.blocks.26.gamma') == (11, 14)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(arch='huge'), ValueError, "unknown PeLK arch 'huge'"),
    (dict(arch=dict(depths=[1], channels=[8])), ValueError, 'kernel_sizes'),
    (dict(arch=dict(depths=[1, 1], channels=[8], kernel_sizes=[7, 7])),
     ValueError, 'same length'),
    (dict(arch=dict(SMALL_ARCH, kernel_sizes=[12, 11, 9, 7])), ValueError,
     'odd'),
    (dict(arch=dict(SMALL_ARCH, kernel_sizes=[3, 11, 9, 7])), ValueError,
     r'center_size \(5\) must not exceed kernel_size \(3\)'),
    (dict(arch=SMALL_ARCH, out_indices=(4, )), ValueError, 'out of range'),
    (dict(arch=SMALL_ARCH, frozen_stages=5), ValueError, 'frozen_stages'),
    (dict(arch=SMALL_ARCH,
          out_indices=(3, -1)), ValueError, r'\[3, -1\] name a stage twice'),
    (dict(arch=SMALL_ARCH, drop_path_rate=1.5), ValueError,
     r'drop_path_rate must be a number in \[0, 1\), got 1.5'),
    (dict(arch=SMALL_ARCH,
          drop_path_rate=-0.5), ValueError, 'drop_path_rate must be a number'),
    (dict(arch=SMALL_ARCH, drop_path_rate='abc'), ValueError,
     r"drop_path_rate must be a number in \[0, 1\), got 'abc'"),
    (dict(arch=dict(SMALL_ARCH, kernel_sizes=[13.0, 11, 9, 7])), ValueError,
     'kernel_sizes must be positive integers'),
    (dict(arch=dict(SMALL_ARCH, depths=[1, 0, 1, 1])), ValueError,
     'depths must be positive integers'),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        PeLK(**kwargs)


def test_wrong_input_channels_and_too_small_inputs():
    model = PeLK(SMALL_ARCH)
    with pytest.raises(
            ValueError, match=r'\(B, 3, H, W\), got \(1, 1, 64, 64\)'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='at least 32x32.*got 31x64'):
        model(torch.randn(1, 3, 31, 64))
    assert model.eval()(torch.randn(1, 3, 32, 32))[-1].shape == (1, 40)


# The paper's ImageNet table (params, FLOPs, 1000-class head) and what we
# count with the counting rules of docs/specification.md, both from the
# metafile.
COUNTED = {
    (m['arch'], m['Metadata']['Input Size']): m['Metadata']
    for m in paper_models('classification') if 'Counted FLOPs' in m['Metadata']
}


@pytest.mark.parametrize('arch, size', list(COUNTED))
def test_params_and_flops_match_the_paper(arch, size):
    model = ImageNetClassifier(arch).eval()
    params = count_params(model, SPARSE_DENSITY)
    flops = count_flops(model, (torch.randn(1, 3, size, size), ),
                        SPARSE_DENSITY)
    entry = COUNTED[arch, size]
    assert abs(params / entry['Parameters'] - 1) < 0.05
    assert abs(flops / entry['FLOPs'] - 1) < 0.10
    assert params == pytest.approx(entry['Counted Parameters'], rel=1e-3)
    assert flops == pytest.approx(entry['Counted FLOPs'], rel=1e-3)


def test_dense_counts():
    """Without sparsity PeLK-T is a 48.7M / 9.76G model (paper: none)."""
    model = ImageNetClassifier('tiny').eval()
    assert count_params(model) == pytest.approx(48.72e6, rel=1e-3)
    assert count_flops(model, (torch.randn(1, 3, 224, 224), )) == \
        pytest.approx(9.76e9, rel=2e-3)


def test_deployed_constant_terms_follow_loaded_weights():
    """The deployed positional term is cached per map size; loading other
    weights in place must not serve the stale one."""
    torch.manual_seed(0)
    model = PeLK(SMALL_ARCH).eval()
    model.switch_to_deploy()
    other = copy.deepcopy(model)
    with torch.no_grad():
        for name, buffer in other.named_buffers():
            if name.endswith('pos_kernel'):
                buffer.add_(0.1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)  # fills the caches
        model.load_state_dict(other.state_dict())
        assert torch.allclose(model(x)[0], other(x)[0], atol=1e-6)


@needs_custom_ops
@pytest.mark.parametrize('deployed', [False, True])
def test_torch_compile_traces_pelk_t_without_graph_breaks(deployed):
    """K and k' are Python ints fixed at construction and the fused CPU
    extension is a custom op (whether it is built is not looked up on disk
    inside the trace), so dynamo traces the whole backbone as one graph
    (training: with gradients)."""
    model = PeLK('tiny')
    if deployed:
        model.eval()
        model.switch_to_deploy()
    torch._dynamo.reset()
    with torch.set_grad_enabled(not deployed):
        explained = torch._dynamo.explain(model)(torch.randn(1, 3, 64, 64))
    assert explained.graph_break_count == 0, explained.break_reasons[:3]
    assert explained.graph_count == 1


# A compiled training step of a PeLK-T stage-4 block (998 channels, K = 13,
# 7x7 map) against eager, in its own process: there inductor's CPU code for
# the backward of gathers from a summed-area table wrote out of bounds (heap
# corruption, an abort) when the positional term was read from one.
COMPILED_BLOCK_STEP = """
import torch
from pelk_mm.models.backbones.pelk import PeLKBlock
from pelk_mm.ops import KernelPositionEmbedding
torch.manual_seed(0)
pos_embed = KernelPositionEmbedding(374, 13, std=0.5)
block = PeLKBlock(998, 13, pos_embed=pos_embed, layer_scale_init_value=1.)
x = torch.randn(1, 998, 7, 7)
weights = [pos_embed.weight, block.mixer.large.weight, block.norm.weight]
grads = []
for model in (block, torch.compile(block)):
    for _ in range(2):  # the second call runs the compiled code again
        out = model(x)
        grad = torch.autograd.grad(out.square().sum(), weights)
    grads.append(grad)
for eager, compiled in zip(*grads):
    print((compiled - eager).abs().max().item() / eager.abs().max().item())
"""


@pytest.mark.slow
def test_a_compiled_training_step_matches_eager(run_tool):
    proc = run_tool('-c', COMPILED_BLOCK_STEP, timeout=600)
    errors = [float(line) for line in proc.stdout.split()]
    assert len(errors) == 3 and max(errors) < 1e-4, errors
