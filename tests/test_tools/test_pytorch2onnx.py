"""tools/deployment/pytorch2onnx.py on the demo configs with a reduced
PeLK (conftest.MINI_ARCH; random weights): the classifier, segmentor and
detector graphs export with dynamic axes and match PyTorch in onnxruntime
at two input sizes; bad input is refused."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from conftest import MINI_ARCH

pytestmark = pytest.mark.slow

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = 'tools/deployment/pytorch2onnx.py'
DEMOS = {
    'classifier': 'demo/pelk_mini_in1k_demo.py',
    'segmentor': 'demo/upernet_pelk_t_ade20k_demo.py',
    'detector': 'demo/cascade_mask_rcnn_pelk_t_coco_demo.py',
}
# The classifier's PeLK differs from the others' (a checkpoint of it does
# not fit their backbones).
ARCHS = dict(classifier=dict(MINI_ARCH, channels=[24, 32, 40, 48]))


@pytest.fixture(scope='module')
def demo(tmp_path_factory, mini_config):
    """``demo(kind)``: the config file of that demo model, reduced, and a
    checkpoint of random weights of it, made once per module."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    folder = tmp_path_factory.mktemp('checkpoints')
    saved = {}

    def get(kind):
        if kind not in saved:
            config = mini_config(folder / f'{kind}_config.py', DEMOS[kind],
                                 ARCHS.get(kind, MINI_ARCH))
            cfg = Config.fromfile(config)
            init_default_scope(cfg.default_scope)
            torch.manual_seed(0)
            model = MODELS.build(cfg.model)
            model.init_weights()
            checkpoint = str(folder / f'{kind}.pth')
            torch.save({'state_dict': model.state_dict()}, checkpoint)
            saved[kind] = config, checkpoint
        return saved[kind]

    return get


def verified_errors(log):
    """{(shape, output): max relative error} of the --verify lines."""
    return {
        (shape, name): float(rel)
        for shape, name, rel in re.findall(
            r'verify (\(.*?\)) (\w+): max abs \S+, max rel (\S+)', log)
    }


@pytest.mark.parametrize('kind, outputs', [
    ('classifier', ['logits']),
    ('segmentor', ['seg_logits']),
    ('detector', [f'features_{i}' for i in range(5)]),
])
def test_exports_match_pytorch_at_two_sizes(run_tool_here, demo, tmp_path,
                                            kind, outputs):
    import onnx
    out = tmp_path / f'{kind}.onnx'
    proc = run_tool_here(TOOL, *demo(kind), '--out', out, '--shape', '64',
                         '96', '--dynamic', '--verify')
    log = proc.stdout + proc.stderr
    errors = verified_errors(log)
    assert set(errors) == {(shape, name)
                           for shape in ('(1, 3, 64, 96)', '(2, 3, 96, 160)')
                           for name in outputs}, log[-3000:]
    assert max(errors.values()) < 1e-4
    graph = onnx.load(str(out))
    assert [o.name for o in graph.graph.output] == outputs
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]
    assert dims[1].dim_value == 3


def test_segmentor_logits_are_at_the_input_size(run_tool_here, demo, tmp_path):
    import onnxruntime as ort
    out = tmp_path / 'seg.onnx'
    run_tool_here(TOOL, *demo('segmentor'), '--out', out, '--shape', '64',
                  '64', '--path', 'direct')
    session = ort.InferenceSession(str(out))
    logits, = session.run(None, {'inputs': torch.rand(1, 3, 64, 64).numpy()})
    assert logits.shape == (1, 150, 64, 64)  # ADE20K's 150 classes


def test_reparameterized_checkpoint_exports_with_deploy_true(
        run_tool_here, demo, tmp_path):
    config, checkpoint = demo('classifier')
    deployed = str(tmp_path / 'deployed.pth')
    run_tool_here('tools/model_converters/reparameterize.py', config,
                  checkpoint, deployed)
    proc = run_tool_here(TOOL, config, deployed, '--out',
                         tmp_path / 'cls.onnx', '--shape', '64', '64',
                         '--verify', '--cfg-options',
                         'model.backbone.deploy=True')
    assert max(verified_errors(proc.stdout + proc.stderr).values()) < 1e-4
    proc = run_tool_here(
        TOOL,
        config,
        deployed,
        '--out',
        str(tmp_path / 'no.onnx'),
        '--shape',
        '64',
        '64',
        check=False)
    assert proc.returncode != 0
    assert 'does not fit the model' in proc.stderr
    assert 'model.backbone.deploy=True' in proc.stderr
    assert not osp.exists(tmp_path / 'no.onnx')


@pytest.mark.parametrize('args, message', [
    (['--shape', '100', '100'], 'multiples of 32 (e.g. 96 96)'),
    (['--dynamic', '--path', 'fft'], 'fft takes static shapes only'),
])
def test_refusals(run_tool_here, demo, tmp_path, args, message):
    out = tmp_path / 'x.onnx'
    out.write_bytes(b'earlier')
    proc = run_tool_here(
        TOOL,
        *demo('classifier'),
        '--out',
        str(out),
        '--overwrite',
        *args,
        check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert out.read_bytes() == b'earlier'


def test_the_output_is_never_the_input_nor_an_existing_file_untold(
        run_tool_here, demo, tmp_path):
    config, checkpoint = demo('classifier')
    before = open(checkpoint, 'rb').read()
    proc = run_tool_here(
        TOOL,
        config,
        checkpoint,
        '--out',
        checkpoint,
        '--overwrite',
        check=False)
    assert proc.returncode != 0
    assert f'--out {checkpoint} is the input {checkpoint}' in proc.stderr
    assert open(checkpoint, 'rb').read() == before
    out = tmp_path / 'earlier.onnx'
    out.write_bytes(b'earlier')
    proc = run_tool_here(
        TOOL, config, checkpoint, '--out', str(out), check=False)
    assert proc.returncode != 0
    assert f'--out {out} exists: pass --overwrite' in proc.stderr
    assert out.read_bytes() == b'earlier'


def test_a_checkpoint_of_another_model_is_refused(run_tool_here, demo,
                                                  tmp_path):
    proc = run_tool_here(
        TOOL,
        demo('segmentor')[0],
        demo('classifier')[1],
        '--out',
        str(tmp_path / 'x.onnx'),
        check=False)
    assert proc.returncode != 0
    assert re.search(
        r"error: .*classifier.pth'? does not fit the model of "
        r'.*segmentor_config.py: shapes differ: size mismatch '
        r'for backbone\..*Give the config it was trained with$',
        proc.stderr.strip()), proc.stderr[-2000:]


def test_missing_onnxruntime_is_named(demo, tmp_path):
    """In a process of its own: one where onnxruntime cannot be imported."""
    hidden = tmp_path / 'hidden'
    (hidden / 'onnxruntime').mkdir(parents=True)
    (hidden / 'onnxruntime' / '__init__.py').write_text(
        "raise ImportError(\"No module named 'onnxruntime'\", "
        "name='onnxruntime')\n")
    proc = subprocess.run([
        sys.executable, TOOL, *demo('classifier'), '--out',
        str(tmp_path / 'x.onnx'), '--verify'
    ],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          env=dict(
                              os.environ,
                              PYTHONPATH=os.pathsep.join([str(hidden), REPO])))
    assert proc.returncode != 0
    assert 'error: onnxruntime is not installed' in proc.stderr
    assert 'make install' in proc.stderr
