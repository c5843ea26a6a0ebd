"""tools/launch.py: what tools/train.py and tools/test.py share."""
import os
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_an_error_under_torchrun_ends_its_output(tmp_path, free_port):
    """A tool's clear error (a ``SystemExit`` with a message) on a rank
    started by torchrun is what the failure summary that ends torchrun's
    output shows (not 'To enable traceback see ...'); outside torchrun it
    the tool's message without a traceback."""
    script = tmp_path / 'tool.py'
    script.write_text(
        'import sys\n'
        f'sys.path.insert(0, {osp.join(REPO, "tools")!r})\n'
        'from launch import run_main\n'
        'def main():\n'
        '    raise SystemExit("error: the work dir is taken; pass --force")\n'
        'run_main(main)\n')
    message = 'error: the work dir is taken; pass --force'
    proc = subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=1',
        f'--master_port={free_port}',
        str(script)
    ],
                          capture_output=True,
                          text=True,
                          timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 1
    summary = proc.stderr[proc.stderr.index('Root Cause'):]
    assert f'SystemExit: {message}' in summary, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, str(script)],
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 1 and proc.stderr.endswith(message + '\n')
    assert 'Traceback' not in proc.stderr
