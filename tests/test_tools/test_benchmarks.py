"""The benchmarks run end to end on a small case and print their tables
(the numbers themselves are for README, not for tests). Each run imports
the whole stack and builds full-size backbones: marked slow."""
import json
import re

import pytest
import torch

pytestmark = pytest.mark.slow


def test_peripheral_conv_benchmark_prints_every_method(run_tool):
    proc = run_tool('tools/benchmark/peripheral_conv.py', '--shape', '1', '4',
                    '20', '20', '--kernels', '13', '31', '--repeat', '1',
                    '--no-memory', '--modes', 'forward')
    log = proc.stdout + proc.stderr
    assert 'forward, input (1, 4, 20, 20), fp32, CPU' in log
    for name in ('dense', 'slak', 'plain-fft', 'fft', 'auto'):
        rows = re.findall(rf'^\s+(13|31)\s+{name}\s+[\d.]+ms', log, re.M)
        assert rows == ['13', '31'], (name, log[-3000:])
    # Every method of ours agrees with the dense conv (float64 reference).
    errors = re.findall(r'ms .* (\d\.\de-\d\d)$', log, re.M)
    assert errors and max(map(float, errors)) < 1e-5


def test_backbone_benchmark_with_autocast(run_tool):
    proc = run_tool('tools/benchmark/backbone.py', '--models', 'convnext-t',
                    'pelk-t', 'pelk-t-deploy', '--sizes', '32', '--train-size',
                    '32', '--batch', '2', '--repeat', '1', '--no-memory',
                    '--amp', 'bf16')
    log = proc.stdout + proc.stderr
    assert 'batch 2, bf16 autocast, CPU' in log
    for name in ('convnext-t', 'pelk-t', 'pelk-t-deploy'):
        assert re.search(rf'{name} +[\d.]+ images/s', log), log[-2000:]
    train = log[log.index('training step'):]
    assert re.search(r'pelk-t +[\d.]+ ms +[\d.]+x convnext-t', train)
    assert 'pelk-t-deploy' not in train  # inference only


def test_backbone_benchmark_compiled_beside_eager(run_tool):
    """Compiled beside eager, inference and the training step, in one run
    with inductor's freezing: it folds the parameters of the inference
    graphs only, and the training step compiles as without it (``--compile``
    alone is the same run with one inductor switch off). ConvNeXt-atto
    (mmpretrain's smallest arch): compiling takes time in proportion to
    the graph (41 s for it on a cold cache, 48 s for ConvNeXt-T)."""
    proc = run_tool('tools/benchmark/backbone.py', '--models', 'convnext-atto',
                    '--sizes', '32', '--train-size', '32', '--repeat', '1',
                    '--no-memory', '--compile', '--freezing')
    log = proc.stdout + proc.stderr
    for case in ('inference', 'training step'):
        part = log[log.index(case):]
        assert re.search(r'^\s+convnext-atto .* ms ', part, re.M), log[-2000:]
        assert re.search(
            r'^\s+convnext-atto\+compiled .* ms .* [\d.]+x eager$', part,
            re.M), log[-2000:]


def test_onnxruntime_latency_benchmark(run_tool):
    proc = run_tool('tools/benchmark/onnxruntime_latency.py', '--sizes', '64',
                    '--paths', 'box_sums', 'direct', '--repeat', '1')
    log = proc.stdout + proc.stderr
    for name in ('pelk-t eager (auto)', 'pelk-t onnxruntime box_sums',
                 'pelk-t onnxruntime direct', 'convnext-t eager',
                 'convnext-t onnxruntime'):
        assert re.search(rf'{re.escape(name)} +[\d.]+ ms +[\d.]+x pelk-t',
                         log), log[-2000:]
    assert re.search(
        r'fastest export path in onnxruntime: (box_sums|direct) at 64', log)


def test_peripheral_conv_benchmark_times_each_stage(run_tool, tmp_path):
    """--stages: one table per stage of the arch, with its own input and
    K, and the achieved GFLOP/s and fraction of the matmul rate measured in
    the same run for the summed-area paths."""
    out = tmp_path / 'stages.json'
    proc = run_tool('tools/benchmark/peripheral_conv.py', '--stages', 'tiny',
                    '--image-sizes', '64', '--shape', '1', '0', '0', '0',
                    '--repeat', '1', '--modes', 'forward', '--json', str(out))
    log = proc.stdout + proc.stderr
    for stage, shape, k in ((1, (1, 46, 16, 16), 51), (4, (1, 374, 2, 2), 13)):
        assert f'tiny stage {stage} at 64: forward, input {shape}' in log
        assert re.search(rf'^\s+{k}\s+sat\s+[\d.]+ms .* [\d.]+\s+\d+%', log,
                         re.M), log[-3000:]
    assert 'float32 matmul' in log
    results = json.loads(out.read_text())
    assert list(
        results['stages']) == [f'tiny stage {i} at 64' for i in (1, 2, 3, 4)]
    assert results['matmul_flops'] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is there')
@pytest.mark.parametrize(
    'script',
    ['tools/benchmark/backbone.py', 'tools/benchmark/peripheral_conv.py'])
def test_benchmarks_refuse_a_missing_device(run_tool, script):
    proc = run_tool(script, '--device', 'cuda', check=False)
    assert proc.returncode != 0
    assert 'error: --device cuda: no CUDA device is visible' in proc.stderr


@pytest.mark.gpu
def test_benchmarks_on_the_gpu(run_tool):
    proc = run_tool('tools/benchmark/peripheral_conv.py', '--device', 'cuda',
                    '--shape', '2', '46', '64', '64', '--kernels', '51', '101',
                    '--repeat', '1', '--dtype', 'bf16')
    log = proc.stdout + proc.stderr
    assert re.search(r'^\s+51\s+fft\s+[\d.]+ms', log, re.M), log[-2000:]
    assert re.search(r'^\s+101\s+triton\s+[\d.]+ms', log, re.M)
    assert 'goal: triton at K=51 >= 2x fft:' in log
    assert 'goal: triton t(K=101)/t(K=51) < 1.3:' in log
    proc = run_tool('tools/benchmark/backbone.py', '--device', 'cuda',
                    '--sizes', '224', '--batch', '8', '--train-size', '0',
                    '--repeat', '1', '--amp', 'bf16')
    assert 'pelk-t-deploy' in proc.stdout + proc.stderr
