"""Timing and memory probes shared by the benchmarks in tools/benchmark/."""
import json
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Dict

import torch


def device_of(name: str) -> torch.device:
    """``--device`` as a torch device, refused with a clear error where it
    is not there."""
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'error: --device {name}: no CUDA device is visible '
                         f'here (torch {torch.__version__}); use --device '
                         f'cpu')
    if device.type not in ('cpu', 'cuda'):
        raise SystemExit(f'error: --device must be cpu or cuda[:N], got '
                         f'{name!r}')
    return device


def add_common_arguments(parser) -> None:
    """``--device``, ``--threads`` and ``--json``, which every benchmark
    takes (see :func:`parse_arguments`)."""
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--json', default=None, help='also write the results to this file')


def parse_arguments(parser):
    """Parse the command line; set torch's threads (``--threads``) and make
    ``args.device`` a device."""
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = device_of(args.device)
    return args


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (timing CUDA needs it)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> str:
    """The device for a table header: the GPU's name, or the CPU threads."""
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)} ({device})'
    return f'CPU, {torch.get_num_threads()} threads'


CPU = torch.device('cpu')


def best_time(call: Callable,
              repeat: int,
              device: torch.device = CPU) -> float:
    """Best wall time of ``repeat`` calls after a warm-up call (one call
    when the warm-up takes over 2 s: the slow baselines); on CUDA each call
    is timed to the end of its kernels."""
    return best_times({'call': call}, repeat, device)['call']


def best_times(calls: Dict[str, Callable],
               repeat: int,
               device: torch.device = CPU) -> Dict[str, float]:
    """:func:`best_time` of each call, their repeats interleaved (one call
    of each in turn), so that a machine that slows down or speeds up during
    the run (a shared host) moves them all alike and their ratios hold."""
    if device.type == 'cuda':
        calls = {
            name: (lambda call=call: (call(), synchronize(device)))
            for name, call in calls.items()
        }
        synchronize(device)
    repeats = {}
    for name, call in calls.items():
        start = time.perf_counter()
        call()  # warm-up: allocations, FFT plans, loading the extension
        repeats[name] = 1 if time.perf_counter() - start > 2.0 else repeat
    best = {name: float('inf') for name in calls}
    for turn in range(repeat):
        for name, call in calls.items():
            if turn < repeats[name]:
                start = time.perf_counter()
                call()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


MEMORY_ENV = {
    'MALLOC_MMAP_THRESHOLD_': str(1 << 20),
    'MALLOC_TRIM_THRESHOLD_': str(1 << 20)
}
_MEMORY_TAG = 'PELK_MM_MEMORY_JSON '


def memory_in_subprocess(argv: list) -> dict:
    """Run ``python argv --memory-only`` and return the dict it reports.

    Memory is measured in its own process, with glibc made to give every
    freed block over 1 MB back to the OS (``MEMORY_ENV``), so that the growth
    of the resident set sees each tensor; that setting slows allocation-heavy
    code (the FFT paths), which is why timings are taken without it.
    """
    proc = subprocess.run([sys.executable, *argv, '--memory-only'],
                          capture_output=True,
                          text=True,
                          env=dict(os.environ, **MEMORY_ENV))
    for line in proc.stdout.splitlines():
        if line.startswith(_MEMORY_TAG):
            return json.loads(line[len(_MEMORY_TAG):])
    raise RuntimeError(f'the memory probe failed:\n{proc.stderr[-2000:]}')


def memory_for_tables(args, measure_memory: Callable[[], dict]) -> dict:
    """The peak memory a benchmark's tables show, keyed as JSON keys them.

    Empty with ``--no-memory``; on CUDA ``measure_memory()`` here (torch's
    allocator counts exactly); on the CPU the script run again with
    ``--memory-only`` (:func:`memory_in_subprocess`), where it calls
    :func:`report_memory` on ``measure_memory()``.
    """
    if args.no_memory:
        return {}
    if args.device.type == 'cuda':
        # The round trip gives the keys the subprocess's report has.
        return json.loads(json.dumps(measure_memory()))
    return memory_in_subprocess(sys.argv)


def report_memory(results: dict) -> None:
    """Print what :func:`memory_in_subprocess` reads back."""
    print(_MEMORY_TAG + json.dumps(results), flush=True)


def write_json(path, device: torch.device, **results) -> None:
    """Write a benchmark's results, with the device they were measured on,
    as JSON (``--json``), for scripts that collect them
    (``tools/gpu/check.py``)."""
    if path:
        with open(path, 'w') as f:
            json.dump(
                dict(device=describe(device), **results),
                f,
                indent=1,
                default=str)


def _resident_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def peak_memory_mb(call: Callable,
                   interval: float = 0.0005,
                   device: torch.device = CPU) -> float:
    """Peak growth of the resident set while ``call`` runs, in MB (on CUDA:
    of the memory torch allocates on the device).

    A thread samples ``/proc/self/statm`` (torch releases the GIL in its
    kernels); with large blocks mmap-ed and returned on free, the growth is
    the call's working memory. Linux only; NaN elsewhere. (Forking a probe
    process instead deadlocks OpenMP.)
    """
    if device.type == 'cuda':
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not os.path.exists('/proc/self/statm'):
        return float('nan')
    before = _resident_bytes()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        call()
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], _resident_bytes())
    return (peak[0] - before) / 2**20
