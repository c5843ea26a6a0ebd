"""Which checkpoint ``--resume`` goes on from."""
import glob
import os.path as osp
import warnings
from typing import List, Optional

from .safe_loading import load_from_local


def named_by_last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint mmengine's ``last_checkpoint`` file names: None where
    there is no such file, or it does not hold a path (a warning says so)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    try:
        with open(pointer, encoding='utf-8') as f:
            named = f.read().strip()
    except (OSError, UnicodeDecodeError) as err:
        warnings.warn(f'{pointer} is unreadable ({type(err).__name__}); '
                      f'looking for the newest checkpoint instead')
        return None
    if not named or '\n' in named or '\0' in named:
        warnings.warn(f'{pointer} does not hold one path; looking for the '
                      f'newest checkpoint instead')
        return None
    return named


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest checkpoint of a work dir that a run can resume from.

    mmengine resumes from the file ``last_checkpoint`` names and fails if it
    is unreadable (a run killed while writing it with mmengine's own hook,
    a disk error), or if ``last_checkpoint`` itself is damaged. This tries
    the file it names first, then the other ``*.pth`` files of the work dir
    from the newest, warning about each one it skips: those it cannot read,
    and files of weights alone (``best_*``, converted or re-parameterised
    files: no ``meta`` to resume the loop from).

    Args:
        work_dir (str): The run's work dir.

    Returns:
        str | None: The checkpoint to resume from; None if there is none.
    """
    latest = named_by_last_checkpoint(work_dir)
    others = sorted(
        glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime, reverse=True)
    candidates: List[str] = ([latest] if latest else []) + [
        path for path in others
        if not latest or osp.abspath(path) != osp.abspath(latest)
    ]
    for path in candidates:
        try:
            # Its structure alone: the tensors mapped, not read (the
            # resume reads them).
            loaded = load_from_local(path, map_location='cpu', mmap=True)
        except (RuntimeError, FileNotFoundError) as err:
            warnings.warn(f'cannot resume from {path} ({err}); trying the '
                          f'next older checkpoint')
            continue
        if not (isinstance(loaded, dict) and 'meta' in loaded
                and 'state_dict' in loaded):
            warnings.warn(f'cannot resume from {path}: it holds weights '
                          f'alone, without the run state (meta) a training '
                          f'checkpoint has; trying the next older checkpoint')
            continue
        return path
    return None
