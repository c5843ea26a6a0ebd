"""Where a tool may write: never over its own input, over an existing file
only when told, with the mode the user's umask gives new files."""
import os
import os.path as osp
from typing import Iterable, Optional


def check_output(path: str,
                 inputs: Iterable[Optional[str]] = (),
                 overwrite: bool = False,
                 option: str = '--out') -> str:
    """``path`` if a tool may write it.

    Args:
        path (str): The output.
        inputs (Iterable[str]): The files the tool reads (a URL or None is
            passed over).
        overwrite (bool): Whether an existing ``path`` may be replaced
            (the tool's ``--overwrite``).
        option (str): The option that named ``path``, for the message.

    Raises:
        FileExistsError: ``path`` is one of ``inputs``, or exists and
            ``overwrite`` is False.
    """
    for given in inputs:
        if given and '://' not in given and _same_file(given, path):
            raise FileExistsError(
                f'{option} {path} is the input {given}: writing it would '
                f'destroy the input; choose another path')
    if osp.exists(path) and not overwrite:
        raise FileExistsError(
            f'{option} {path} exists: pass --overwrite to replace it, or '
            f'choose another path')
    return path


def _same_file(one: str, other: str) -> bool:
    if osp.realpath(one) == osp.realpath(other):
        return True
    return osp.exists(one) and osp.exists(other) and osp.samefile(one, other)


def with_umask_mode(path: str) -> str:
    """Give ``path`` the mode a new file gets under the user's umask (a
    file made with ``tempfile.mkstemp`` and renamed is 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return path
