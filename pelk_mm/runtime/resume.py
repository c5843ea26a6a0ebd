"""Which checkpoint ``--resume`` goes on from."""
import glob
import os.path as osp
import warnings
from typing import Optional

from mmengine.runner import find_latest_checkpoint

from .safe_loading import load_from_local


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest readable checkpoint of a work dir.

    mmengine resumes from the file ``last_checkpoint`` names and fails if it
    is unreadable (a run killed while writing it with mmengine's own hook,
    a disk error). This tries it first, then the other ``*.pth`` files of
    the work dir from the newest, warning about each one it skips.

    Args:
        work_dir (str): The run's work dir.

    Returns:
        str | None: The checkpoint to resume from; None if there is none.
    """
    latest = find_latest_checkpoint(work_dir)
    others = sorted(
        glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime, reverse=True)
    candidates = ([latest] if latest else []) + [
        path for path in others
        if not latest or osp.abspath(path) != osp.abspath(latest)
    ]
    for path in candidates:
        try:
            load_from_local(path, map_location='cpu')
        except (RuntimeError, FileNotFoundError) as err:
            warnings.warn(f'cannot resume from {path} ({err}); trying the '
                          f'next older checkpoint')
            continue
        return path
    return None
