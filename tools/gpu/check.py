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
5. ``gpu-tests``: the other tests marked ``gpu`` (a test whose package is
   missing skips itself);
6. ``demo-amp``: one AMP training iteration of the demo config of each task
   of :data:`pelk_mm.tasks.TASKS` whose packages are there.

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
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]

# On a GPU, the parts' shares of the budget, in seconds (9 minutes in all).
SHARES = {
    'environment': 20,
    'accuracy': 90,
    'op-fp32': 80,
    'backbone-fp32': 80,
    'backbone-bf16': 70,
    'op-bf16': 60,
    'gpu-tests': 60,
    'demo-amp': 60,
}
# The dry run's limit per part: a backstop for a hung one, not a share.
DRY_PART_LIMIT = 600
# The dry run times one dtype of each benchmark (the other one is the same
# plumbing).
DRY_SKIPS = {'backbone-bf16', 'op-bf16'}
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
            record = dict(
                status='skipped',
                reason='dry run: the plumbing '
                'of the part before')
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


def run_pytest(check: Check, share: float, *args: str) -> dict:
    """``pytest -m gpu ARGS``: its summary, and a failure where a test
    failed (on a machine without CUDA every gpu test is skipped)."""
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
    record = dict(results=dict(summary=summary), text=_tail(proc.stdout, 4000))
    if proc.returncode not in (0, 5):  # 5: nothing selected
        record.update(status='failed', reason=summary)
    return record


def accuracy(check: Check, share: float) -> dict:
    return run_pytest(check, share, ACCURACY_TEST)


def gpu_tests(check: Check, share: float) -> dict:
    return run_pytest(check, share, 'tests', f'--ignore={ACCURACY_TEST}')


# 3./4. benchmarks


def op_benchmark(dtype: str) -> Callable:

    def part(check: Check, share: float) -> dict:
        need('mmengine')
        out = check.work / f'op-{dtype}.json'
        sizes = ([
            '--shape', '1', '2', '16', '16', '--kernels', '13', '31',
            '--repeat', '1', '--no-memory'
        ] if check.dry_run else [])
        proc = check.tool([
            'tools/benchmark/peripheral_conv.py', '--device', check.device,
            '--dtype', dtype, '--json',
            str(out), *sizes
        ], share)
        results = json.loads(out.read_text())
        return dict(results=results, text=_log_tables(proc))

    return part


def backbone_benchmark(amp: str) -> Callable:

    def part(check: Check, share: float) -> dict:
        need('mmengine', 'mmcv', 'mmpretrain')
        out = check.work / f'backbone-{amp}.json'
        if check.dry_run:
            sizes = [
                '--batch', '2', '--sizes', '32', '--train-size', '32',
                '--models', 'convnext-atto', 'pelk-t', '--repeat', '1',
                '--no-memory'
            ]
        else:
            sizes = [
                '--batch', '64', '--sizes', '224', '--train-size', '224',
                '--models', 'convnext-t', 'slak-t-stripes', 'pelk-t',
                'pelk-t-deploy'
            ]
        proc = check.tool([
            'tools/benchmark/backbone.py', '--device', check.device, '--amp',
            amp, '--json',
            str(out), *sizes
        ], share)
        return dict(
            results=json.loads(out.read_text()), text=_log_tables(proc))

    return part


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


# 6. demo configs


def demo_configs() -> Dict[str, tuple]:
    """The PeLK demo config of each task of ``pelk_mm.tasks``, in its
    order: ``{config: (its Config, task)}``."""
    from mmengine.config import Config

    from pelk_mm.tasks import TASKS
    by_scope = {}
    for path in sorted((ROOT / 'configs' / 'demo').glob('*_demo.py')):
        cfg = Config.fromfile(str(path))
        if cfg.model.backbone.type.endswith('PeLK'):
            by_scope[cfg.get('default_scope')] = (str(path.relative_to(ROOT)),
                                                  cfg)
    return {
        by_scope[scope][0]: (by_scope[scope][1], task)
        for scope, task in TASKS.items() if scope in by_scope
    }


def demo_amp(check: Check, share: float) -> dict:
    need('mmengine', 'mmcv')
    stop = time.monotonic() + share
    results, failed = {}, []
    for config, (cfg, task) in demo_configs().items():
        missing = [
            m for m in (cfg.default_scope,
                        'mmcv._ext' if task.needs_mmcv_ops else None)
            if m and not have(m)
        ]
        if missing:
            results[config] = f'skipped: needs {", ".join(missing)}'
            continue
        if check.dry_run and results:
            results[config] = 'skipped: dry run (one config is enough)'
            continue
        root = check.work / task.dataset
        try:
            check.tool([
                'tools/dataset_converters/generate_dataset.py', task.dataset,
                str(root), '--num-train', '2', '--num-val', '1'
            ], stop - time.monotonic())
            check.tool([
                'tools/train.py', config, '--work-dir',
                str(check.work / f'train-{task.dataset}'), '--force',
                *([] if check.dry_run else ['--amp']), '--cfg-options',
                *one_iteration(cfg, task, root)
            ], stop - time.monotonic())
            results[config] = 'ok: one iteration' + (
                ' (dry run: fp32 on the CPU)' if check.dry_run else ' (AMP)')
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            results[config] = f'failed: {_tail(str(error), 1500)}'
            failed.append(config)
    record = dict(results=results)
    if failed:
        record.update(status='failed', reason=', '.join(failed))
    return record


def one_iteration(cfg, task, root: Path) -> List[str]:
    """``--cfg-options`` for one training iteration of the config ``cfg``
    on the dataset generated at ``root`` (and the validation of one image
    that ends it)."""
    old_root = cfg.train_dataloader.dataset.data_root
    # The config's data_root as it lies under the task's default root
    # (ADE20K's ADEChallengeData2016 below the generator's root).
    data_root = os.path.normpath(root /
                                 os.path.relpath(old_root, task.default_root))
    options = [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]
    # The first two training images, one batch; one validation image.
    options += [
        'train_dataloader.batch_size=2', 'train_dataloader.dataset.indices=2',
        'val_dataloader.dataset.indices=1', 'train_cfg.val_interval=100',
        'train_cfg.max_iters=1'
        if 'max_iters' in cfg.train_cfg else 'train_cfg.max_epochs=1'
    ]
    # Annotation files the evaluators read, named under the config's root.
    for evaluator in ('val_evaluator', 'test_evaluator'):
        ann_file = cfg.get(evaluator, {}).get('ann_file')
        if ann_file and ann_file.startswith(old_root):
            options.append(f'{evaluator}.ann_file='
                           f'{data_root}/{ann_file[len(old_root):]}')
    return options


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
    'accuracy': accuracy,
    'op-fp32': op_benchmark('fp32'),
    'backbone-fp32': backbone_benchmark('none'),
    'backbone-bf16': backbone_benchmark('bf16'),
    'op-bf16': op_benchmark('bf16'),
    'gpu-tests': gpu_tests,
    'demo-amp': demo_amp,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--out', default=os.environ.get('OUT', 'work_dirs/'
                                        'gpu_check'))
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='the same parts on CPU tensors at tiny sizes')
    parser.add_argument(
        '--budget',
        type=float,
        default=None,
        help='seconds for the whole run on a GPU (default: 530; a dry run '
        'runs every part to its end)')
    parser.add_argument(
        '--parts', nargs='+', choices=sorted(PARTS), default=list(PARTS))
    args = parser.parse_args()
    budget = args.budget or 530
    check = Check(Path(args.out), args.dry_run, budget)
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
