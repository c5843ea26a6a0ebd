"""Process-wide switches of the peripheral conv, read from the environment
once, at import, and changed in code through the setters below.

=====================  ==================================================
``PELK_MM_PATH``       Path every ``path='auto'`` choice takes (``auto``,
                       or a name of :mod:`pelk_mm.ops.paths`); default
                       ``auto`` (the cost model).
``PELK_MM_TRITON``     ``0`` keeps ``auto`` from choosing the Triton
                       kernels; default ``1``.
``PELK_MM_EXT_DIR``    Where the fused CPU extension is built; default
                       ``~/.cache/pelk_mm/extensions``.
=====================  ==================================================

Tests and tools use the setters (or :func:`forced_path`, a context
manager) instead of the environment, which is read only once.
"""
import contextlib
import os
import os.path as osp
from typing import Iterator

_forced_path = os.environ.get('PELK_MM_PATH', 'auto') or 'auto'
_triton_allowed = os.environ.get('PELK_MM_TRITON', '1') != '0'
_extension_dir = os.environ.get('PELK_MM_EXT_DIR') or osp.join(
    osp.expanduser('~'), '.cache', 'pelk_mm', 'extensions')


def get_forced_path() -> str:
    """The path every ``'auto'`` choice takes, or ``'auto'``."""
    return _forced_path


def set_forced_path(name: str) -> None:
    """Make every ``'auto'`` choice ``name`` (``'auto'``: the cost model).
    Checked where a choice is made, so that the error names the map."""
    global _forced_path
    _forced_path = name or 'auto'


@contextlib.contextmanager
def forced_path(name: str) -> Iterator[None]:
    """Within the block, every ``'auto'`` choice is ``name``; the previous
    setting is restored on leaving it."""
    previous = get_forced_path()
    set_forced_path(name)
    try:
        yield
    finally:
        set_forced_path(previous)


def triton_allowed() -> bool:
    """Whether ``'auto'`` may choose the Triton kernels."""
    return _triton_allowed


def set_triton_allowed(allowed: bool) -> None:
    global _triton_allowed
    _triton_allowed = bool(allowed)


def get_extension_dir() -> str:
    """The root folder of the fused CPU extension's builds."""
    return _extension_dir


def set_extension_dir(path: str) -> None:
    global _extension_dir
    _extension_dir = path
