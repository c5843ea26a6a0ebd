"""ONNX export of PeLK (pelk_mm.deployment): every export path and arch
exports and matches PyTorch in onnxruntime within 1e-4 (relative) at two
input sizes; bad input is refused with a clear error."""
import os
import stat
import sys
import warnings

import pytest
import torch
import torch.nn as nn

from pelk_mm.deployment import (EXPORT_PATHS, OPSET, TORCHSCRIPT_OPSET,
                                AdaptiveAvgPool2dFromSizes,
                                compare_with_pytorch, export_onnx, load_model,
                                require, with_exportable_pooling)
from pelk_mm.models import PeLK
from pelk_mm.ops.torch_features import TORCH_VERSION, has
from pelk_mm.runtime import CheckpointMismatchError

SMALL_ARCH = dict(
    depths=[1, 1, 1, 1],
    channels=[16, 24, 32, 40],
    kernel_sizes=[13, 11, 9, 7])
TOLERANCE = 1e-4  # relative to the largest output


class Features(nn.Module):
    """The backbone's four stage outputs."""

    def __init__(self, arch, deploy=True):
        super().__init__()
        self.backbone = PeLK(
            arch,
            out_indices=(0, 1, 2, 3),
            gap_before_final_norm=False,
            deploy=deploy)

    def forward(self, x):
        return self.backbone(x)


def assert_matches(file, model, *shapes):
    for shape in shapes:
        errors = compare_with_pytorch(file, model, torch.randn(*shape))
        assert len(errors) == 4
        worst = max(e['max_rel'] for e in errors.values())
        assert worst < TOLERANCE, (shape, errors)


def export_dynamic(arch, tmp_path):
    """The deployed backbone of ``arch`` exported in the default form with
    dynamic axes from a 1x3x64x64 example: (model, file)."""
    torch.manual_seed(0)
    model = Features(arch).eval()
    file = export_onnx(
        model,
        torch.randn(1, 3, 64, 64),
        str(tmp_path / 'pelk.onnx'),
        dynamic=True)
    umask = os.umask(0)
    os.umask(umask)  # the mode of a new file, not mkstemp's 0600
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o666 & ~umask
    return model, file


def test_default_form_exports_with_dynamic_axes(tmp_path):
    """The default path (summed-area tables in standard ops) of the
    deployed backbone: one graph, any batch and map size."""
    model, file = export_dynamic(SMALL_ARCH, tmp_path)
    assert_matches(file, model, (1, 3, 64, 64), (3, 3, 96, 160))


EXPORTERS = ['torchscript'] + (['dynamo'] if has('dynamo_onnx') else [])


@pytest.mark.parametrize('exporter', EXPORTERS)
@pytest.mark.parametrize('dynamic', [False, True], ids=['static', 'dynamic'])
@pytest.mark.parametrize('deploy', [True, False], ids=['deployed', 'trained'])
def test_plain_torch_onnx_export_of_auto(tmp_path, exporter, dynamic, deploy):
    """A user's own export script (and mmdeploy) call ``torch.onnx.export``
    on the model as it is, its convs on ``path='auto'``: ``auto`` takes a
    path that exporter can write (not FFT under the TorchScript-based
    one), and onnxruntime computes what the model does."""
    pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    torch.manual_seed(0)
    model = Features(SMALL_ARCH, deploy=deploy).eval()
    x = torch.randn(2, 3, 64, 64)
    options = dict(input_names=['inputs'], opset_version=TORCHSCRIPT_OPSET)
    if exporter == 'dynamo':
        options.update(dynamo=True, opset_version=OPSET, external_data=False)
        if dynamic:
            dim = torch.export.Dim.DYNAMIC
            options['dynamic_shapes'] = ({0: dim, 2: dim, 3: dim}, )
    else:
        if TORCH_VERSION >= (2, 5):
            options['dynamo'] = False
        if dynamic:
            options['dynamic_axes'] = {'inputs': {0: 'b', 2: 'h', 3: 'w'}}
    file = str(tmp_path / 'plain.onnx')
    with torch.no_grad():
        torch.onnx.export(model, (x, ), file, **options)
    shapes = [(2, 3, 64, 64)] + ([(1, 3, 96, 128)] if dynamic else [])
    assert_matches(file, model, *shapes)


@pytest.mark.parametrize('deploy', [True, False], ids=['deployed', 'trained'])
def test_plain_torch_jit_trace_of_auto(deploy):
    """``torch.jit.trace`` with its defaults (its check traces a second
    time, without grad, and compares the graphs): ``auto`` records one
    graph, and the traced module computes what the model does at another
    batch size."""
    torch.manual_seed(0)
    model = Features(SMALL_ARCH, deploy=deploy).eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        traced = torch.jit.trace(model, torch.randn(2, 3, 64, 64))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        for got, expected in zip(traced(x), model(x)):
            torch.testing.assert_close(got, expected)


@pytest.mark.slow
@pytest.mark.parametrize('deploy', [True, False])
def test_every_path_and_the_training_form_export(tmp_path, traceable_path,
                                                 deploy):
    """Each path's graph matches at both sizes: one graph with dynamic axes
    (exported once), or, for fft (static shapes only), one per size."""
    torch.manual_seed(0)
    model = Features(SMALL_ARCH, deploy=deploy).eval()
    if traceable_path != 'fft':
        file = export_onnx(model, torch.randn(2, 3, 64, 64),
                           str(tmp_path / 'dynamic.onnx'), traceable_path,
                           True)
        assert_matches(file, model, (2, 3, 64, 64), (2, 3, 96, 128),
                       (1, 3, 32, 160))
        return
    for size in ((64, 64), (96, 128)):
        file = export_onnx(model, torch.randn(2, 3, *size),
                           str(tmp_path / f'{size}.onnx'), traceable_path,
                           False)
        assert_matches(file, model, (2, 3, *size))


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['tiny', 'base-101'])
def test_every_arch_exports_with_dynamic_axes(tmp_path, arch):
    """Each arch's kernels and grids (PeLK-T/S/B share theirs; B-101 has
    its own), at one block per stage and reduced widths: what the export
    differs by between the archs."""
    setting = dict(PeLK.arch_settings[arch])
    setting.update(depths=[1, 1, 1, 1], channels=[16, 24, 32, 40])
    model, file = export_dynamic(setting, tmp_path)
    assert_matches(file, model, (1, 3, 64, 64), (2, 3, 96, 128))


@pytest.mark.parametrize('output_size', [1, 2, 3, 6, (2, 5)])
@pytest.mark.parametrize('size', [(6, 6), (7, 5), (2, 3), (13, 17)])
def test_adaptive_pool_from_sizes_is_adaptive_avg_pool(output_size, size):
    """Bins computed from the map size equal PyTorch's adaptive pooling,
    also where they overlap (sizes that do not divide)."""
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    pool = nn.AdaptiveAvgPool2d(output_size)
    assert torch.allclose(AdaptiveAvgPool2dFromSizes(pool)(x), pool(x))


def test_exportable_pooling_replaces_pools_in_a_copy():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d(3))
    copied = with_exportable_pooling(model)
    assert isinstance(model[1], nn.AdaptiveAvgPool2d)
    assert isinstance(copied[1], AdaptiveAvgPool2dFromSizes)
    x = torch.randn(1, 3, 11, 7)
    assert torch.allclose(copied(x), model(x), atol=1e-6)
    without = nn.Sequential(nn.Conv2d(3, 3, 1))
    assert with_exportable_pooling(without) is without
    with pytest.raises(ValueError, match='output size of None'):
        AdaptiveAvgPool2dFromSizes(nn.AdaptiveAvgPool2d((None, 3)))


def test_export_paths_reach_every_peripheral_conv_and_leave_the_model(
        tmp_path):
    """Each path makes its own graph (a DFT, a Conv per peripheral conv, or
    CumSums); the model's convs keep their path; a name of no export path
    ('sat', which no graph can hold, among them) is refused."""
    onnx = pytest.importorskip('onnx')
    # Standard ops only: the fused CPU and the Triton kernels are no export
    # path (box_sums is their form in a graph).
    assert {'direct', 'fft', 'box_sums'} <= set(EXPORT_PATHS)
    assert not {'sat', 'triton'} & set(EXPORT_PATHS)
    model = Features(SMALL_ARCH)
    ops = {}
    dft = has('dynamo_onnx')  # torch >= 2.5: the TorchScript exporter has none
    for path in EXPORT_PATHS:
        if path == 'fft' and not dft:
            with pytest.raises(ValueError, match="'fft' path exports"):
                export_onnx(model, torch.randn(2, 3, 64, 64),
                            str(tmp_path / 'fft.onnx'), path)
            continue
        file = export_onnx(model, torch.randn(2, 3, 64, 64),
                           str(tmp_path / f'{path}.onnx'), path)
        ops[path] = {node.op_type for node in onnx.load(file).graph.node}
    assert 'DFT' in ops.get('fft', {'DFT'}) and 'DFT' not in ops['direct']
    assert 'CumSum' in ops['box_sums']
    assert 'CumSum' not in ops['direct']
    convs = {m.path for m in model.modules() if hasattr(m, 'grid_widths')}
    assert convs == {'auto'}
    for name in ('sat', 'winograd'):
        with pytest.raises(ValueError, match='export path must be one of'):
            export_onnx(model, torch.randn(1, 3, 64, 64),
                        str(tmp_path / 'x.onnx'), name)


def test_fft_form_refuses_dynamic_axes(tmp_path):
    with pytest.raises(ValueError, match="'fft' path .* input size only"):
        export_onnx(
            Features(SMALL_ARCH),
            torch.randn(1, 3, 64, 64),
            str(tmp_path / 'x.onnx'),
            'fft',
            dynamic=True)


def test_a_failed_export_keeps_the_existing_file(tmp_path):

    class Broken(nn.Module):

        def forward(self, x):
            raise RuntimeError('no graph here')

    file = tmp_path / 'model.onnx'
    file.write_bytes(b'an earlier export')
    with pytest.raises(Exception, match='no graph here'):
        export_onnx(Broken(), torch.randn(1, 3, 32, 32), str(file))
    assert file.read_bytes() == b'an earlier export'
    assert os.listdir(tmp_path) == ['model.onnx']  # no partial file left


@pytest.mark.parametrize('module', ['onnx', 'onnxscript', 'onnxruntime'])
def test_a_missing_package_is_named_with_the_install_command(
        monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    with pytest.raises(
            ImportError,
            match=f'{module} is not installed.*'
            'make install.*onnxruntime==1.32.0'):
        require(module)


def test_load_model_refuses_a_checkpoint_that_does_not_fit(
        tmp_path, load_config):
    cfg = load_config('demo/pelk_mini_in1k_demo.py')
    model, _ = load_model(cfg.copy(), _save_random_weights(cfg, tmp_path))
    state = model.state_dict()
    deployed = PeLK(cfg.model.backbone.arch, deploy=True).state_dict()
    deployed = {f'backbone.{k}': v for k, v in deployed.items()}
    deployed.update({k: v for k, v in state.items() if 'backbone' not in k})
    torch.save({'state_dict': deployed}, tmp_path / 'deployed.pth')
    with pytest.raises(
            CheckpointMismatchError,
            match='does not fit the model .* unloaded .* '
            'model.backbone.deploy=True'):
        load_model(cfg.copy(), str(tmp_path / 'deployed.pth'))
    cfg.model.backbone.deploy = True
    deployed_model, _ = load_model(cfg.copy(), str(tmp_path / 'deployed.pth'))
    assert deployed_model.backbone.deploy
    state['head.fc.weight'] = state['head.fc.weight'][:2]
    torch.save({'state_dict': state}, tmp_path / 'two_classes.pth')
    with pytest.raises(CheckpointMismatchError, match='shapes differ'):
        load_model(cfg.copy(), str(tmp_path / 'two_classes.pth'))


def _save_random_weights(cfg, folder):
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.default_scope)
    model_cfg = cfg.model.copy()
    model_cfg.backbone.pop('init_cfg', None)
    model = MODELS.build(model_cfg)
    file = str(folder / 'random.pth')
    torch.save({'state_dict': model.state_dict()}, file)
    return file
