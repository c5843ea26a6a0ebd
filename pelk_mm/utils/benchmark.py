"""Timing and memory probes shared by the benchmarks in tools/benchmark/."""
import os
import resource
import time
from typing import Callable


def best_time(call: Callable, repeat: int) -> float:
    """Best wall time of ``repeat`` calls after a warm-up call (the warm-up
    alone when it takes over 2 s: the slow baselines)."""
    start = time.perf_counter()
    call()  # warm-up: allocations, FFT plans; skipped for slow calls
    first = time.perf_counter() - start
    if first > 2.0:
        return first
    best = float('inf')
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory_mb(call: Callable) -> float:
    """Growth of the resident set while ``call`` runs, in a forked child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        call()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        os.write(write, str((after - before) / 1024).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        value = pipe.read()
    os.waitpid(pid, 0)
    return float(value) if value else float('nan')
