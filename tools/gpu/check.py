"""Measure pelk_mm on a GPU in one run that stops itself (``check.sh``).

Usage (from the repository root; ``tools/gpu/check.sh`` installs the wheels
``tools/gpu/prepare.sh`` fetched, then runs this):
    python tools/gpu/check.py --out DIR [--dry-run] [--budget SECONDS]

Each part runs in the order below, within its share of the budget (a part
that overruns is stopped and the next one starts); the report is written
after every part, so a run stopped from outside keeps what it measured:

1. ``environment``: torch, CUDA, the GPU, triton, the OpenMMLab packages;
2. ``accuracy``: every path that can run on the device against the float64
   dense conv (plus a positional term and a bias) at the stage shapes of
   PeLK-T/S, B and B-101 at 224 (the peripheral conv's channels, batch 2),
   in fp32, bf16 and fp16: the output and both gradients, each against the
   path's own tolerance;
3. ``op-fp32``, ``op-bf16``: ``tools/benchmark/peripheral_conv.py``
   (K 13/31/51/101/151), with the cost constants its times imply;
4. ``backbone-fp32``, ``backbone-bf16``: ``tools/benchmark/backbone.py``
   (ConvNeXt-T, the SLaK-T shape, PeLK-T, batch 64 at 224: inference and a
   training step, images/s and peak memory; fp32 and bf16 autocast);
5. ``gpu-tests``: the tests marked ``gpu``;
6. ``demo-amp``: one AMP training iteration of each demo config whose
   packages are there (mmseg and mmdet need mmcv's compiled ops).

A part whose packages are missing is skipped with a line saying so.
``--dry-run`` runs the same parts on CPU tensors at tiny sizes (under a
minute; the quick tests run it), to catch a broken script before a GPU is
spent on it. Writes ``gpu_check.json`` and ``gpu_check.txt`` under
``--out``.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]

# The parts' shares of the budget, in seconds (9 minutes in all on a GPU).
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
# The dry run times one dtype of each benchmark (the other is the same
# plumbing): under a minute on 2 cores.
DRY_SHARES = {
    'environment': 5,
    'accuracy': 8,
    'op-fp32': 10,
    'backbone-fp32': 20,
    'gpu-tests': 8,
    'demo-amp': 20,
}

DEMO_CONFIGS = {
    # config: (dataset to generate, what its task needs beyond mmcv-lite)
    'configs/demo/pelk_mini_in1k_demo.py': ('imagenet', ()),
    'configs/demo/upernet_pelk_t_ade20k_demo.py':
    ('ade20k', ('mmseg', 'mmcv._ext')),
    'configs/demo/cascade_mask_rcnn_pelk_t_coco_demo.py':
    ('coco', ('mmdet', 'mmcv._ext')),
}
DATA_ROOTS = {
    'imagenet': 'data/imagenet_synthetic',
    'ade20k': 'data/ade_synthetic',
    'coco': 'data/coco_synthetic',
}


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
        self.shares = DRY_SHARES if dry_run else SHARES
        self.device = 'cpu' if dry_run else 'cuda'
        self.parts: Dict[str, dict] = {}
        self.work = Path(tempfile.mkdtemp(prefix='pelk_gpu_check_'))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run_part(self, name: str, part: Callable) -> None:
        share = min(self.shares.get(name, 0), self.left() - 2)
        started = time.monotonic()
        record = dict(status='ok')
        if name not in self.shares:
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


# 2. accuracy


def stage_shapes(dry_run: bool) -> List[dict]:
    """The peripheral convs of PeLK's stages at 224 (one per distinct
    shape: T and S share theirs), or a tiny stand-in for the dry run."""
    from pelk_mm.models import PeLK
    if dry_run:
        return [_stage('tiny', 1, 1, 2, 8, 51, 5)]
    shapes, seen = [], set()
    for arch in PeLK.arch_settings:
        for conv in PeLK.peripheral_conv_shapes(arch, 224):
            shape = _stage(arch, conv['stage'], 2, conv['channels'],
                           conv['size'], conv['kernel_size'],
                           conv['center_size'])
            key = tuple(shape.values())[3:]
            if key not in seen:
                seen.add(key)
                shapes.append(shape)
    return shapes


def _stage(arch: str, stage: int, batch: int, channels: int, size: int,
           kernel_size: int, center: int) -> dict:
    return dict(
        zip(('arch', 'stage', 'batch', 'channels', 'size', 'K', 'center'),
            (arch, stage, batch, channels, size, kernel_size, center)))


def accuracy(check: Check, share: float) -> dict:
    import torch

    from pelk_mm.ops import (expand_by_grid, paths, peripheral_conv2d,
                             peripheral_conv2d_reference, sharing_grid)
    from pelk_mm.ops.grid import grid_tensor
    device = torch.device(check.device)
    stop = time.monotonic() + share - 2
    rows, failures = [], 0
    dtypes = {
        'fp32': torch.float32,
        'bf16': torch.bfloat16,
        'fp16': torch.float16
    }
    for shape in stage_shapes(check.dry_run):
        k = shape['K']
        grid = grid_tensor(sharing_grid(k, shape['center']), device)
        torch.manual_seed(k)
        x0 = torch.randn(shape['batch'], shape['channels'], shape['size'],
                         shape['size'])
        w0 = torch.randn(shape['channels'], len(grid), len(grid)) / k
        # A positional term and a bias: the addend the paths add (the
        # Triton kernels in their last step).
        pos0 = torch.randn(shape['channels'], k, k) / k**2
        bias = torch.randn(shape['channels'], device=device)
        for dtype_name, dtype in dtypes.items():
            # The reference convolves the inputs as rounded to the dtype.
            x = x0.to(dtype).to(device)
            w = w0.to(dtype).to(device)
            pos = pos0.to(device)
            x64, w64 = (t.double().requires_grad_() for t in (x, w))
            expected = peripheral_conv2d_reference(
                x64, expand_by_grid(w64, grid, k), pos.double(), 'valid',
                bias.double())
            grad_out = torch.randn_like(expected)
            expected_grads = torch.autograd.grad(expected, (x64, w64),
                                                 grad_out)
            request = paths.make_request(x, w, grid, k, traced=False)
            for name, refusal in paths.refusals(request).items():
                if time.monotonic() > stop:
                    return dict(
                        status='timeout',
                        reason=f'stopped at its share after {len(rows)} '
                        f'cases',
                        results=rows,
                        text=_rows_text(rows))
                path = paths.get(name)
                if refusal is not None or path.emulated(request):
                    continue
                xs, ws = (t.clone().requires_grad_() for t in (x, w))
                out = peripheral_conv2d(
                    xs,
                    ws,
                    pos,
                    bias=bias,
                    path=name,
                    grid=grid,
                    kernel_size=k)
                grads = torch.autograd.grad(out, (xs, ws), grad_out.to(dtype))
                tolerance = path.tolerance.get(dtype,
                                               path.tolerance[torch.float32])
                errors = [
                    paths.relative_error(a, b)
                    for a, b in zip((out, *grads), (expected, *expected_grads))
                ]
                ok = max(errors) <= tolerance
                failures += not ok
                rows.append(
                    dict(
                        shape,
                        dtype=dtype_name,
                        path=name,
                        output=errors[0],
                        grad_input=errors[1],
                        grad_weight=errors[2],
                        tolerance=tolerance,
                        ok=ok))
    return dict(
        results=rows,
        text=_rows_text(rows),
        **({
            'status': 'failed',
            'reason': f'{failures} beyond tolerance'
        } if failures else {}))


def _rows_text(rows: List[dict]) -> str:
    lines = [
        f'{"arch":>8} {"st":>2} {"B,C,HxW":>14} {"K":>4} {"dtype":>5} '
        f'{"path":>9} {"output":>8} {"grad x":>8} {"grad w":>8} {"tol":>6}'
    ]
    for r in rows:
        size = f'{r["batch"]},{r["channels"]},{r["size"]}x{r["size"]}'
        lines.append(
            f'{r["arch"]:>8} {r["stage"]:>2} {size:>14} '
            f'{r["K"]:>4} {r["dtype"]:>5} {r["path"]:>9} {r["output"]:>8.1e} '
            f'{r["grad_input"]:>8.1e} {r["grad_weight"]:>8.1e} '
            f'{r["tolerance"]:>6.0e}{"" if r["ok"] else "  BEYOND"}')
    return '\n'.join(lines)


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
                '--models', 'convnext-t', 'pelk-t', '--repeat', '1',
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


# 5. tests


def gpu_tests(check: Check, share: float) -> dict:
    need('pytest')
    files, skipped = [], {}
    for path in sorted((ROOT / 'tests').rglob('*.py')):
        text = path.read_text()
        if '@pytest.mark.gpu' not in text:
            continue
        name = str(path.relative_to(ROOT))
        missing = [
            package for package in ('mmseg', 'mmdet', 'mmpretrain')
            if re.search(rf"(import|from) {package}\b|__import__\('{package}'",
                         text) and not have(package)
        ]
        if missing:
            skipped[name] = f'needs {", ".join(missing)}'
        else:
            files.append(name)
    proc = subprocess.run([
        sys.executable, '-m', 'pytest', '-m', 'gpu', '-q', '-p',
        'no:cacheprovider', '--continue-on-collection-errors', '-rfEs', *files
    ],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=share)
    summary = (proc.stdout.strip().splitlines() or [''])[-1]
    record = dict(
        results=dict(files=files, skipped=skipped, summary=summary),
        text=''.join(f'{name}: skipped, {why}\n'
                     for name, why in skipped.items()) +
        _tail(proc.stdout, 4000))
    if proc.returncode not in (0, 5):  # 5: nothing selected
        record.update(status='failed', reason=summary)
    return record


# 6. demo configs


def demo_amp(check: Check, share: float) -> dict:
    need('mmengine', 'mmcv')
    stop = time.monotonic() + share
    results, failed = {}, []
    for config, (dataset, modules) in DEMO_CONFIGS.items():
        missing = [m for m in modules if not have(m)]
        if missing:
            results[config] = f'skipped: needs {", ".join(missing)}'
            continue
        if check.dry_run and dataset != 'imagenet':
            results[config] = 'skipped: dry run (one config is enough)'
            continue
        root = check.work / dataset
        left = stop - time.monotonic()
        try:
            check.tool([
                'tools/dataset_converters/generate_dataset.py', dataset,
                str(root), '--num-train', '2', '--num-val', '1'
            ], left)
            work_dir = check.work / f'train-{dataset}'
            check.tool([
                'tools/train.py', config, '--work-dir',
                str(work_dir), '--force',
                *([] if check.dry_run else ['--amp']), '--cfg-options',
                *one_iteration(config, dataset, root)
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


def one_iteration(config: str, dataset: str, root: Path) -> List[str]:
    """``--cfg-options`` for one training iteration of ``config`` on the
    generated ``root`` (and the validation of one image that ends it)."""
    data_root = str(root)
    if dataset == 'ade20k':
        data_root += '/ADEChallengeData2016'
    options = [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]
    # The first two training images, one batch; one validation image.
    options += [
        'train_dataloader.batch_size=2', 'train_dataloader.dataset.indices=2',
        'val_dataloader.dataset.indices=1'
    ]
    if dataset == 'ade20k':
        options += ['train_cfg.max_iters=1', 'train_cfg.val_interval=100']
    else:
        options += ['train_cfg.max_epochs=1', 'train_cfg.val_interval=100']
    if dataset == 'coco':
        options += [
            f'val_evaluator.ann_file={root}/annotations/'
            'instances_val2017.json',
            f'test_evaluator.ann_file={root}/annotations/'
            'instances_val2017.json'
        ]
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
        help='seconds for the whole run (default: 530 on a GPU, 58 dry)')
    parser.add_argument(
        '--parts', nargs='+', choices=sorted(PARTS), default=list(PARTS))
    args = parser.parse_args()
    budget = args.budget or (58 if args.dry_run else 530)
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
