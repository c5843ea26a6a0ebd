"""Measure pelk_mm on a GPU in one run that stops itself (``check.sh``).

Usage (from the repository root; ``tools/gpu/check.sh`` installs the wheels
``tools/gpu/prepare.sh`` fetched, then runs this):
    python tools/gpu/check.py --out DIR [--dry-run] [--budget SECONDS]

An orchestrator of what the repository already has; the parts, in order:

1. ``environment``: torch, CUDA, the GPU, triton, the OpenMMLab packages;
2. ``accuracy``: the ``gpu`` test of every path at PeLK's stage shapes
   against the float64 dense conv, within each path's declared tolerance
   (``tests/test_ops/test_paths/test_stage_accuracy.py``);
3. ``op-fp32``, ``op-bf16``: ``tools/benchmark/peripheral_conv.py``
   (K 13/31/51/101/151) and the cost constants its times imply
   (``fit_path_costs.py``);
4. ``backbone-fp32``, ``backbone-bf16``: ``tools/benchmark/backbone.py``
   (ConvNeXt-T, the SLaK-T shape, PeLK-T, batch 64 at 224: inference and a
   training step, images/s and peak memory; fp32 and bf16 autocast);
5. ``gpu-tests``: the other tests marked ``gpu``, among them one AMP
   training iteration of each task's demo config (a test whose package is
   missing skips itself).

On a GPU each part runs within its share of the budget (device time is lent
by the minute: a part that overruns is stopped and the next one starts),
and the report is written after every part, so a run stopped from outside
keeps what it measured. ``--dry-run`` runs every part to its end on CPU
tensors at tiny sizes, whatever the machine's load (the suite runs it), to
catch a broken script before a GPU is spent on it. Writes
``gpu_check.json`` and ``gpu_check.txt`` under ``--out``.
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]

# On a GPU, the parts' shares of the budget, in seconds (9 minutes in all).
SHARES = {
    'environment': 20,
    'accuracy': 90,
    'op-fp32': 80,
    'backbone-fp32': 80,
    'backbone-bf16': 70,
    'op-bf16': 60,
    'gpu-tests': 120,
}
# The dry run's limit per part: a backstop for a hung one, not a share.
DRY_PART_LIMIT = 600
# The dry run times one dtype of each benchmark.
DRY_SKIPS = dict.fromkeys(('backbone-bf16', 'op-bf16'),
                          'dry run: the plumbing of the fp32 part')
ACCURACY_TEST = 'tests/test_ops/test_paths/test_stage_accuracy.py'


class Skipped(Exception):
    """A part that cannot run here; the message says why."""


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def need(*modules: str) -> None:
    missing = [m for m in modules if not have(m)]
    if missing:
        raise Skipped(f'missing {", ".join(missing)} (run tools/gpu/'
                      f'prepare.sh on a machine with pip, then carry '
                      f'.gpu_wheels)')


class Check:
    """The run: its device, sizes, deadline and report."""

    def __init__(self, out: Path, dry_run: bool, budget: float):
        self.out, self.dry_run = out, dry_run
        self.start = time.monotonic()
        self.deadline = self.start + budget
        self.device = 'cpu' if dry_run else 'cuda'
        self.parts: Dict[str, dict] = {}
        self.work = Path(tempfile.mkdtemp(prefix='pelk_gpu_check_'))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def share(self, name: str) -> float:
        """The seconds ``name`` may take: its share of what is left (on a
        dry run, the backstop limit)."""
        if self.dry_run:
            return DRY_PART_LIMIT
        return min(SHARES[name], self.left() - 2)

    def run_part(self, name: str, part: Callable) -> None:
        share = self.share(name)
        started = time.monotonic()
        record = dict(status='ok')
        if self.dry_run and name in DRY_SKIPS:
            record = dict(status='skipped', reason=DRY_SKIPS[name])
        elif share <= 1:
            record = dict(status='skipped', reason='out of time')
        else:
            try:
                record.update(part(self, share) or {})
            except Skipped as why:
                record = dict(status='skipped', reason=str(why))
            except subprocess.TimeoutExpired as error:
                record = dict(
                    status='timeout',
                    reason=f'stopped after {share:.0f} s',
                    output=_tail(error.output))
            except Exception as error:  # report it, go on to the next part
                record = dict(
                    status='failed', reason=f'{type(error).__name__}: {error}')
        record['seconds'] = round(time.monotonic() - started, 1)
        self.parts[name] = record
        self.write()
        print(
            f'[gpu check {time.monotonic() - self.start:5.0f}s] {name}: '
            f'{record["status"]}'
            f'{" (" + record["reason"] + ")" if "reason" in record else ""}',
            flush=True)

    def tool(self, args: List[str],
             timeout: float) -> subprocess.CompletedProcess:
        """Run ``python args`` from the repository root."""
        proc = subprocess.run([sys.executable, *args],
                              cwd=ROOT,
                              capture_output=True,
                              text=True,
                              timeout=timeout)
        if proc.returncode:
            raise RuntimeError(f'{" ".join(args[:2])} exited with '
                               f'{proc.returncode}:\n'
                               f'{_tail(proc.stdout + proc.stderr)}')
        return proc

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        payload = dict(
            dry_run=self.dry_run,
            seconds=round(time.monotonic() - self.start, 1),
            parts=self.parts)
        (self.out / 'gpu_check.json').write_text(
            json.dumps(payload, indent=1, default=str))
        (self.out / 'gpu_check.txt').write_text(report_text(payload))


def _tail(text, limit: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors='replace')
    return (text or '')[-limit:]


# 1. environment


def environment(check: Check, share: float) -> dict:
    import torch
    info = dict(
        python=sys.version.split()[0],
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(0),
            capability='%d.%d' % torch.cuda.get_device_capability(0))
    elif not check.dry_run:
        raise RuntimeError('torch sees no GPU (tools/preflight.py says why)')
    for module in ('triton', 'mmengine', 'mmcv', 'mmpretrain', 'mmseg',
                   'mmdet', 'pytest'):
        info[module] = _version(module)
    info['mmcv_compiled_ops'] = have('mmcv._ext')
    return dict(results=info)


def _version(module: str) -> Optional[str]:
    if not have(module):
        return None
    try:
        return getattr(__import__(module), '__version__', 'installed')
    except Exception as error:  # a package that is there but broken
        return f'broken ({type(error).__name__}: {error})'


# 2./5. tests


def tests(*args: str) -> Callable:
    """The part that runs ``pytest -m gpu ARGS``: its summary, and a
    failure where a test failed (on a machine without CUDA every gpu test
    is skipped)."""

    def run(check: Check, share: float) -> dict:
        need('pytest')
        proc = subprocess.run([
            sys.executable, '-m', 'pytest', '-m', 'gpu', '-q', '-p',
            'no:cacheprovider', '-rfEs', *args
        ],
                              cwd=ROOT,
                              capture_output=True,
                              text=True,
                              timeout=share)
        summary = (proc.stdout.strip().splitlines() or [''])[-1]
        record = dict(
            results=dict(summary=summary), text=_tail(proc.stdout, 4000))
        if proc.returncode not in (0, 5):  # 5: nothing selected
            record.update(status='failed', reason=summary)
        return record

    return run


# 3./4. benchmarks


class Benchmark(NamedTuple):
    script: str
    needs: Tuple[str, ...]  # the modules it imports
    sizes: List[str]  # its options on a GPU
    dry_sizes: List[str]  # on a dry run

    def part(self, *options: str) -> Callable:
        """The part that runs it with ``options``: its JSON and tables."""

        def run(check: Check, share: float) -> dict:
            need(*self.needs)
            out = check.work / "-".join((Path(self.script).stem, *options))
            proc = check.tool([
                self.script, '--device', check.device, '--json',
                str(out), *options,
                *(self.dry_sizes if check.dry_run else self.sizes)
            ], share)
            return dict(
                results=json.loads(out.read_text()), text=_log_tables(proc))

        return run


OP_BENCHMARK = Benchmark('tools/benchmark/peripheral_conv.py', ('mmengine', ),
                         [], [
                             '--shape', '1', '2', '16', '16', '--kernels',
                             '13', '31', '--repeat', '1', '--no-memory'
                         ])
BACKBONE_BENCHMARK = Benchmark(
    'tools/benchmark/backbone.py', ('mmengine', 'mmcv', 'mmpretrain'), [
        '--batch', '64', '--sizes', '224', '--train-size', '224', '--models',
        'convnext-t', 'slak-t-stripes', 'pelk-t', 'pelk-t-deploy'
    ], [
        '--batch', '2', '--sizes', '32', '--train-size', '32', '--models',
        'convnext-atto', 'pelk-t', '--repeat', '1', '--no-memory'
    ])


def _log_tables(proc: subprocess.CompletedProcess) -> str:
    """A benchmark's tables: its log without the logger's prefixes."""
    lines = []
    for line in (proc.stdout + proc.stderr).splitlines():
        if ' - mmengine - INFO - ' in line:
            line = line.split(' - mmengine - INFO - ', 1)[1]
        elif ' - mmengine - ' in line or not line.strip():
            continue
        lines.append(line)
    return '\n'.join(lines)


# the report


def report_text(payload: dict) -> str:
    lines = [
        f'pelk_mm GPU check{" (dry run)" if payload["dry_run"] else ""}, '
        f'{payload["seconds"]:.0f} s'
    ]
    for name, part in payload['parts'].items():
        lines.append('')
        lines.append(f'== {name}: {part["status"]} ({part["seconds"]} s)'
                     f'{" - " + part["reason"] if "reason" in part else ""}')
        if part.get('text'):
            lines.append(part['text'])
        elif isinstance(part.get('results'), dict):
            lines += [f'  {k}: {v}' for k, v in part['results'].items()]
        if part.get('output'):
            lines.append(part['output'])
    return '\n'.join(lines) + '\n'


PARTS = {
    'environment': environment,
    'accuracy': tests(ACCURACY_TEST),
    'op-fp32': OP_BENCHMARK.part('--dtype', 'fp32'),
    'backbone-fp32': BACKBONE_BENCHMARK.part('--amp', 'none'),
    'backbone-bf16': BACKBONE_BENCHMARK.part('--amp', 'bf16'),
    'op-bf16': OP_BENCHMARK.part('--dtype', 'bf16'),
    'gpu-tests': tests('tests', f'--ignore={ACCURACY_TEST}'),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--out', default=os.environ.get('OUT', 'work_dirs/gpu_check'))
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='the same parts on CPU tensors at tiny sizes')
    parser.add_argument(
        '--budget',
        type=float,
        default=530,
        help='seconds for the whole run on a GPU (a dry run runs every '
        'part to its end)')
    parser.add_argument(
        '--parts', nargs='+', choices=sorted(PARTS), default=list(PARTS))
    args = parser.parse_args()
    check = Check(Path(args.out), args.dry_run, args.budget)
    try:
        for name in args.parts:
            check.run_part(name, PARTS[name])
    finally:
        shutil.rmtree(check.work, ignore_errors=True)
    print(f'report: {check.out}/gpu_check.txt, {check.out}/gpu_check.json')
    bad = [n for n, p in check.parts.items() if p['status'] == 'failed']
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
