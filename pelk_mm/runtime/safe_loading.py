"""Local checkpoint loading that cannot run code.

mmengine 0.10.7 loads local files with ``torch.load(filename)``, which since
torch 2.6 means ``weights_only=True``: it refuses what mmengine itself writes
into checkpoints (the message hub's ``HistoryBuffer`` objects, numpy values
in ``meta``), so ``resume=True`` and many OpenMMLab checkpoints fail to load.
:func:`load_from_local` is registered for local paths through mmengine's
extension point (:meth:`CheckpointLoader.register_scheme`) and keeps
``weights_only=True``, allowing exactly these globals besides torch's own:

* numpy arrays, scalars and dtypes (numpy's reconstructors and dtype
  classes);
* ``mmengine.logging.HistoryBuffer``, whose statistics methods are pickled
  as ``getattr(HistoryBuffer, 'mean')`` and the like: ``getattr`` is allowed
  only for those names on that class.

Everything else is refused with an error that names the file and the global,
so a crafted checkpoint cannot run code. The allow-list is applied only
inside this loader (``torch.serialization.safe_globals``), so ``torch.load``
called anywhere else behaves as it does without pelk_mm. On a torch older
than 2.6, whose weights-only loader takes no such allow-list, the same globals
(torch's weights-only ones and these) are all that pelk_mm's restricted
unpickler (:class:`RestrictedUnpickler`) lets a file name.

For a trusted file that needs more (a legacy checkpoint pickling other
objects), set ``PELK_MM_TRUST_CHECKPOINTS=1``: files are then loaded with
``weights_only=False``, which runs whatever code they contain, with a
warning each time.
"""
import codecs
import collections
import functools
import importlib
import os
import pickle
import re
import types
import warnings
from typing import Any, Dict, List

import _compat_pickle
import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

from ..ops.torch_features import has
from .checkpoint_fit import require_file

TRUST_VARIABLE = 'PELK_MM_TRUST_CHECKPOINTS'

# HistoryBuffer's own statistics methods, which its pickled state holds.
_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_method(owner: Any, name: str) -> Any:
    """``getattr`` as allowed while unpickling: HistoryBuffer's statistics."""
    if owner is HistoryBuffer and name in _STATISTICS:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'getattr({owner!r}, {name!r}) is not allowed in a checkpoint: only '
        f'the statistics methods of mmengine HistoryBuffer are')


def allowed_globals() -> List[Any]:
    """The globals :func:`load_from_local` allows beside torch's own."""
    # numpy 2 moved numpy.core to numpy._core (1.26 has a bare _core).
    numpy2 = np.lib.NumpyVersion(np.__version__) >= '2.0.0'
    multiarray = importlib.import_module(
        'numpy._core.multiarray' if numpy2 else 'numpy.core.multiarray')
    allowed = [
        np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
        HistoryBuffer, (_history_buffer_method, 'builtins.getattr')
    ]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25
    if dtypes is not None:
        allowed += [
            getattr(dtypes, name) for name in dir(dtypes) if
            name.endswith('DType') and isinstance(getattr(dtypes, name), type)
        ]
    return allowed


#: What the refusal of a global says, whichever unpickler refused it.
_REFUSED = 'Weights only load failed'


@functools.lru_cache(maxsize=None)
def _allowed_by_name() -> Dict[str, Any]:
    """Every global a checkpoint may name, by the name it is pickled under:
    torch's weights-only ones and :func:`allowed_globals` (numpy's
    reconstructors under both of numpy's module names)."""
    from torch import _weights_only_unpickler
    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    # What newer torch allows beside torch's own types (torch 2.12's list):
    # bytes under pickle protocol 2 (numpy arrays' data; encoding a string
    # returns a string or bytes, no more), and containers of values.
    allowed.update({
        '_codecs.encode': codecs.encode,
        'builtins.bytearray': bytearray,
        'builtins.complex': complex,
        'builtins.set': set,
        'collections.Counter': collections.Counter,
    })
    for entry in allowed_globals():
        obj, name = entry if isinstance(
            entry, tuple) else (entry,
                                f'{entry.__module__}.{entry.__qualname__}')
        allowed[name] = obj
        for old, new in (('numpy.core.', 'numpy._core.'), ('numpy._core.',
                                                           'numpy.core.')):
            if name.startswith(old):
                allowed[new + name[len(old):]] = obj
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that finds only the globals of :func:`_allowed_by_name`
    (for torch < 2.6; torch's loader wraps it and adds its storages)."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2's names (pickle protocol 2), mapped as pickle maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name),
                                                       (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = _allowed_by_name().get(f'{module}.{name}')
        if found is None:
            raise pickle.UnpicklingError(
                f'{_REFUSED}: GLOBAL {module}.{name} is not allowed')
        return found


def _restricted_load(file, **kwargs) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


#: ``torch.load``'s ``pickle_module`` of the restricted unpickler.
restricted_pickle = types.SimpleNamespace(
    __name__='pelk_mm_restricted_pickle',
    Unpickler=RestrictedUnpickler,
    load=_restricted_load)


def load_from_local(filename: str, map_location=None) -> dict:
    """Load a local checkpoint with ``weights_only=True`` and the allow-list.

    Args:
        filename (str): Path of the checkpoint (``~`` is expanded).
        map_location: Passed to :func:`torch.load`.

    Returns:
        dict: The loaded checkpoint.

    Raises:
        FileNotFoundError: If the file does not exist.
        RuntimeError: If the file is not a readable checkpoint, or holds
            objects outside the allow-list (the message names the global and
            the opt-in for trusted files).
    """
    path = require_file(filename, 'load_from, --resume or init_cfg.checkpoint',
                        'check the path')
    if os.environ.get(TRUST_VARIABLE) == '1':
        warnings.warn(
            f'{TRUST_VARIABLE}=1: loading {path!r} with weights_only=False, '
            f'which runs any code the file contains; unset it for files you '
            f'did not write yourself')
        return _read(path, map_location, weights_only=False)
    try:
        if has('safe_globals'):
            with torch.serialization.safe_globals(allowed_globals()):
                return _read(path, map_location, weights_only=True)
        return _read(
            path,
            map_location,
            weights_only=False,
            pickle_module=restricted_pickle)
    except pickle.UnpicklingError as err:
        raise RuntimeError(
            f'refused to load checkpoint {path!r}: it holds objects that '
            f'a checkpoint of weights does not need and that could run '
            f'code ({_reason(err)}). If you trust the file '
            f'(you wrote it, or it comes from a source you trust), load '
            f'it with the environment variable {TRUST_VARIABLE}=1, or '
            f're-save its tensors with plain torch.save.') from None


def _reason(err: Exception) -> str:
    """What torch's refusal refused, without its advice to load unsafely."""
    text = str(err)
    found = re.search(r'GLOBAL (\S+)', text)
    if found:
        return f'the global {found.group(1)}'
    found = re.search(r'WeightsUnpickler error:\s*(\S[^\n]*)', text)
    return found.group(1).strip() if found else type(err).__name__


def _read(path: str, map_location, **load_options) -> dict:
    try:
        return torch.load(path, map_location=map_location, **load_options)
    except pickle.UnpicklingError as err:
        if _REFUSED in str(err):
            raise  # an object outside the allow-list: the caller explains
        raise _unreadable(path, err) from err
    except Exception as err:  # torch raises many types for a bad file
        raise _unreadable(path, err) from err


def _unreadable(path: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f'could not read checkpoint {path!r} ({type(err).__name__}: '
        f'{str(err)[:300]}). The file is truncated, corrupt or not a PyTorch '
        f'checkpoint: save or convert it again.')


# '' matches every path not claimed by a longer prefix (http://, s3://, ...).
CheckpointLoader.register_scheme(
    prefixes='', loader=load_from_local, force=True)
