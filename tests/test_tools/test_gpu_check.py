"""``tools/gpu/check.sh``, the one command a lent GPU machine runs: its dry
run (the same parts on CPU tensors at tiny sizes, in under a minute)."""
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # the whole check, at tiny sizes (half a minute)
def test_dry_run_measures_every_part_on_the_cpu(tmp_path):
    """The command a GPU run will use, on CPU tensors: every part runs to
    its end (the bf16 benchmarks are the fp32 ones' plumbing; the gpu tests,
    the accuracy one first, are collected and skipped), and the report holds
    the benchmark tables and the fitted constants."""
    proc = subprocess.run(
        ['bash', 'tools/gpu/check.sh', '--dry-run', '--out',
         str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / 'gpu_check.json').read_text())
    parts = report['parts']
    assert report['dry_run'] and list(parts) == [
        'environment', 'accuracy', 'op-fp32', 'backbone-fp32', 'backbone-bf16',
        'op-bf16', 'gpu-tests'
    ]
    statuses = {name: part['status'] for name, part in parts.items()}
    assert statuses == dict({name: 'ok'
                             for name in parts}, **{
                                 'backbone-bf16': 'skipped',
                                 'op-bf16': 'skipped'
                             }), {
                                 n: p.get('reason')
                                 for n, p in parts.items()
                             }
    fits = parts['op-fp32']['results']['fitted_costs']
    assert fits['forward']['fft'] > 0
    assert 'images_per_second' in parts['backbone-fp32']['results']
    # Here every gpu-marked test is collected and skipped (no GPU), the
    # demo configs' AMP iterations among them.
    for part in ('accuracy', 'gpu-tests'):
        summary = parts[part]['results']['summary']
        assert 'skipped' in summary and 'passed' not in summary, summary
        assert 'failed' not in summary and 'error' not in summary, summary
    text = (tmp_path / 'gpu_check.txt').read_text()
    assert 'ready to paste' in text and 'images/s' in text
