"""One run per work dir, and an earlier run's checkpoints kept when a new
one starts over there."""
import datetime
import glob
import os
import os.path as osp
import shutil
import socket
import sys
from typing import Dict, Optional

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not guarded
    fcntl = None  # type: ignore

LOCK_NAME = '.pelk_mm.lock'

# The locks this process holds (their open files by path), until it ends.
_held: Dict[str, int] = {}


def lock_work_dir(work_dir: str) -> None:
    """Hold ``work_dir`` for this process until it ends: a second run into
    it is refused (``lockf`` on ``work_dir/.pelk_mm.lock``; released by the
    system when the process ends, however it ends). Runs one after another
    in one process (a script calling the tools) share it.

    Raises:
        RuntimeError: Another process holds it; the message names that
            run (its process, machine, start and command).
    """
    if fcntl is None:
        return
    os.makedirs(work_dir, exist_ok=True)
    path = osp.realpath(osp.join(work_dir, LOCK_NAME))
    if path in _held:  # a run before this one in this process
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # A POSIX record lock: held by this process alone (the data
        # loader's forked workers do not inherit it, so it ends with the
        # run's own process), released by the system however that ends.
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        with open(path, errors='replace') as f:
            holder = f.read().strip() or 'a process that did not say which'
        os.close(fd)
        raise RuntimeError(
            f'the work dir {work_dir} is in use by another run ({holder}): '
            f'wait for it to end, or give this run another --work-dir')
    os.ftruncate(fd, 0)
    started = datetime.datetime.now().isoformat(timespec='seconds')
    os.write(
        fd, f'pid {os.getpid()} on {socket.gethostname()} since {started}: '
        f'{" ".join(sys.argv)}\n'.encode())
    _held[path] = fd


def set_aside_earlier_run(work_dir: str) -> Optional[str]:
    """Move an earlier run's checkpoints (``*.pth``, ``last_checkpoint``)
    into ``work_dir/earlier_run_<time>/``, so that a run started over in
    ``work_dir`` neither overwrites them nor is resumed from them.

    Returns:
        str | None: The folder they went to; None if there were none.
    """
    found = sorted(glob.glob(osp.join(work_dir, '*.pth')))
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not found and not osp.exists(pointer):
        return None
    stamp = datetime.datetime.now().strftime('%Y%m%d_%H%M%S')
    folder = osp.join(work_dir, f'earlier_run_{stamp}')
    os.makedirs(folder, exist_ok=True)
    for path in found + ([pointer] if osp.exists(pointer) else []):
        shutil.move(path, osp.join(folder, osp.basename(path)))
    return folder
