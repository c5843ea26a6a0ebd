"""Building and loading pelk_mm's C++ extension (``peripheral_sat.cpp``,
beside this file): the fused CPU kernels of the ``'sat'`` path
(:mod:`pelk_mm.ops.paths.sat`).

It is compiled with ``torch.utils.cpp_extension.load`` (about a minute;
``make install`` does it once, a pip user runs :data:`BUILD_COMMAND`;
otherwise the first ``path='sat'`` call) and cached under
``PELK_MM_EXT_DIR`` (:mod:`pelk_mm.ops.switches`; default
``~/.cache/pelk_mm/extensions``), one folder per installation (torch
version, CPU, torch and source locations), so that two clones, virtual
environments or CPUs never build into, or load from, each other's folder.
Builds are serialised by an ``flock`` that the kernel releases when its
process dies, so a build killed half-way (Ctrl-C, a job time limit) cannot
leave a lock behind that makes the next one wait forever. Each build
records the library's SHA-256 beside it; a library that no longer matches
it (damaged on disk, or built by a pelk_mm that recorded none) is never
loaded: ``auto`` passes it by, saying so once, and the next :func:`load`
rebuilds it. Whether it is built (:func:`is_built`) is asked without
building: choosing a path never compiles. Where it cannot be built (no
compiler), :func:`load` raises an error that says why.
"""
import contextlib
import functools
import hashlib
import logging
import os
import os.path as osp
import platform
import threading
import warnings
from typing import Iterator, Optional

import torch

from .. import switches
from ..torch_features import is_compiling

_SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'peripheral_sat.cpp')
_lock = threading.Lock()
_module = None
_error: Optional[str] = None
# What is_built() last answered outside a trace (primed at import): a
# compiled graph's trace cannot look at files.
_built_answer = False


@functools.lru_cache(maxsize=None)
def cpu_identity() -> str:
    """What ``-march=native`` compiles for: the CPU's model and features.

    The distinct ``model name`` / ``flags`` lines of ``/proc/cpuinfo`` (and
    their Arm counterparts), or the platform's machine and processor names
    where that file does not exist. Read once per process.
    """
    keys = ('model name', 'flags', 'Features', 'CPU implementer', 'CPU part')
    try:
        with open('/proc/cpuinfo') as f:
            lines = {line.strip() for line in f if line.startswith(keys)}
    except OSError:
        lines = set()
    return '\n'.join(
        sorted(lines)) or (f'{platform.machine()} {platform.processor()}')


def build_directory() -> str:
    """The folder this installation builds the extension into.

    One per torch version (the ABI changes between them), per CPU (the
    library is compiled with ``-march=native``, so a home folder shared by
    nodes of different CPUs must not serve one node's build to another) and
    per installation: the torch headers and the source it compiles are named
    by absolute path in the build file, so clones sharing one folder would
    rebuild it in turn, each over a library another may have loaded.
    """
    return _build_directory(switches.get_extension_dir(), cpu_identity())


@functools.lru_cache(maxsize=None)
def _build_directory(root: str, cpu: str) -> str:
    installation = hashlib.sha1(
        f'{osp.realpath(torch.__file__)}|{osp.realpath(_SOURCE)}|'
        f'{cpu}'.encode())
    return osp.join(
        root, f'torch{torch.__version__.replace("+", "_")}-'
        f'{installation.hexdigest()[:10]}')


def torch_locks_builds() -> bool:
    """Whether ``torch.utils.cpp_extension`` holds an advisory lock on its
    ``lock`` file (``FileLock``, torch >= 2.15), which a killed build
    releases, rather than a file whose existence blocks."""
    from torch.utils import cpp_extension
    return 'FileLock' in vars(cpp_extension)


@contextlib.contextmanager
def _exclusive_build(path: str) -> Iterator[None]:
    """Hold this folder's build lock; clear a baton left by a killed build.

    ``torch.utils.cpp_extension`` up to torch 2.14 guards a build with a
    ``lock`` file that it removes when it finishes; a process killed in
    between leaves it, and every later ``load`` then waits for it forever.
    Under an ``flock`` (held by the kernel for as long as its process
    lives) no other process of ours is building, so a ``lock`` file found is
    such a leftover. Later torch holds an advisory lock on that file itself
    (``FileLock``), which a killed process releases: nothing to clear.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's own lock file only
        yield
        return
    if torch_locks_builds():
        yield
        return
    with open(osp.join(path, 'build.flock'), 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            baton = osp.join(path, 'lock')
            if osp.exists(baton):
                warnings.warn(
                    f'removing {baton}, left by an extension build that was '
                    f'killed before it finished')
                os.remove(baton)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_LIBRARY = 'pelk_peripheral_sat.so'
_CHECKSUM = _LIBRARY + '.sha256'


def _library_digest(path: str) -> str:
    with open(osp.join(path, _LIBRARY), 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _is_intact(path: str) -> bool:
    """Whether the library in ``path`` is the one its build recorded."""
    try:
        with open(osp.join(path, _CHECKSUM)) as f:
            return f.read().strip() == _library_digest(path)
    except OSError:
        return False


def _discard_unverified(path: str) -> None:
    """Remove a library that does not match its recorded checksum, and its
    object file, so that the build makes both anew."""
    library = osp.join(path, _LIBRARY)
    if not osp.exists(library) or _is_intact(path):
        return
    warnings.warn(
        f'{library} does not match the checksum recorded when it was built '
        f'(damaged on disk, or built by a pelk_mm that recorded none): '
        f'rebuilding it (about a minute)')
    for name in (_LIBRARY, _CHECKSUM, 'peripheral_sat.o'):
        with contextlib.suppress(FileNotFoundError):
            os.remove(osp.join(path, name))


def _record_checksum(path: str) -> None:
    """Record the library's SHA-256 where it is not recorded yet (a build
    in this call): a library loaded as built leaves the file untouched."""
    digest = _library_digest(path)
    with contextlib.suppress(OSError):
        with open(osp.join(path, _CHECKSUM)) as f:
            if f.read().strip() == digest:
                return
    partial = osp.join(path, f'.{_CHECKSUM}.{os.getpid()}')
    with open(partial, 'w') as f:
        f.write(digest + '\n')
    os.replace(partial, osp.join(path, _CHECKSUM))


def load(verbose: bool = False):
    """The compiled extension module, building it the first time.

    Raises:
        RuntimeError: If it cannot be built, with the compiler's reason.
    """
    global _module, _error
    with _lock:
        if _module is not None:
            return _module
        if _error is not None:
            raise RuntimeError(_error)
        try:
            # Importing cpp_extension warns that no CUDA runtime is found on
            # CPU machines; this extension needs none.
            logger = logging.getLogger('torch.utils.cpp_extension')
            level = logger.level
            logger.setLevel(logging.ERROR)
            try:
                from torch.utils.cpp_extension import load as load_extension
            finally:
                logger.setLevel(level)
            path = build_directory()
            os.makedirs(path, exist_ok=True)
            with _exclusive_build(path):
                _discard_unverified(path)
                _module = load_extension(
                    name='pelk_peripheral_sat',
                    sources=[_SOURCE],
                    extra_cflags=['-O3', '-march=native', '-fopenmp'],
                    extra_ldflags=['-fopenmp'],
                    build_directory=path,
                    verbose=verbose)
                _record_checksum(path)
        except Exception as error:  # compiler missing, build failed, ...
            _error = (
                f'the summed-area-table extension of pelk_mm could not be '
                f'built ({type(error).__name__}: {str(error)[-800:]}). It '
                f'needs a C++ compiler with OpenMP (g++) and ninja; install '
                f'them, or use path="fft" / "direct" (path="auto" falls back '
                f'on its own)')
            raise RuntimeError(_error) from error
        return _module


def is_built() -> bool:
    """Whether the extension is loaded, or built and up to date in
    :func:`build_directory` (so loading it compiles nothing). Never builds:
    :func:`~pelk_mm.ops.paths.choose_path` asks this, so asking for a
    cost cannot start a one-minute compile. The folder is looked at once
    per process and folder (``auto`` asks on every forward until the
    extension is loaded); in a compiled graph's trace the answer is the
    last one given outside it."""
    global _built_answer
    if _module is not None:
        return True
    if _error is not None:
        return False
    if is_compiling():
        return _built_answer
    _built_answer = _built_in(build_directory())
    return _built_answer


@functools.lru_cache(maxsize=None)
def _built_in(path: str) -> bool:
    library = osp.join(path, _LIBRARY)
    if not osp.isfile(library) or \
            osp.getmtime(library) < osp.getmtime(_SOURCE):
        return False
    if not _is_intact(path):
        _unverified.add(library)
        return False
    return True


# Built libraries that do not match their recorded checksum.
_unverified: set = set()

is_built()  # primes _built_answer (one stat, no build)

#: Builds the extension where ``make install`` did not (a pip install).
BUILD_COMMAND = 'python -m pelk_mm.ops.csrc.build'
_said_not_built = False


def say_once_it_is_not_built() -> None:
    """Warn once per process that 'auto' passes the kernel by, and how to
    build it."""
    global _said_not_built
    if _said_not_built or _error is not None:
        return
    _said_not_built = True
    library = osp.join(build_directory(), _LIBRARY)
    state = (f'built in {library}, but it does not match the checksum '
             f'recorded by its build (damaged on disk, or built by a pelk_mm '
             f'that recorded none)' if library in _unverified else 'not built')
    logging.getLogger('pelk_mm').warning(
        "pelk_mm: the fused CPU kernel of the peripheral conv ('sat') is %s, "
        "so 'auto' takes slower paths on the CPU; build it once with `%s` "
        '(about a minute; needs g++ with OpenMP and ninja)', state,
        BUILD_COMMAND)


def available() -> bool:
    """Whether the extension is (or can be) built; builds it if needed."""
    try:
        load()
        return True
    except RuntimeError:
        return False


if __name__ == '__main__':  # BUILD_COMMAND
    load(verbose=True)
    print(f'pelk_mm: the fused CPU kernel is built in {build_directory()}')
