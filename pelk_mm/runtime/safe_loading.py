"""Checkpoint loading that cannot run code, from wherever a checkpoint comes.

mmengine 0.10.7 loads local files with ``torch.load(filename)`` and URLs
with ``torch.hub.load_state_dict_from_url`` (``weights_only=False``: a file
given by URL runs whatever code it holds). pelk_mm registers its own loaders
for every scheme through mmengine's extension point
(:meth:`CheckpointLoader.register_scheme`): local paths, ``http(s)://``
(downloaded into torch.hub's cache, then read as a local file),
``torchvision://``, ``open-mmlab://`` and ``mmcls://`` (resolved with
mmengine's own tables), and mmengine's file backends (``s3://``,
``petrel://``). All of them read through :func:`load_checkpoint_file`:

* ``torch.load(weights_only=True)`` (on torch older than 2.6, pelk_mm's
  restricted unpickler :class:`RestrictedUnpickler`), allowing torch's
  weights-only globals and no more, except that
* the names of numpy's reconstructors and dtypes (numpy 2's and 1.x's) and
  of mmengine's ``HistoryBuffer`` find stand-ins
  (:mod:`.pickled_values`) that check what the file gives (plain numeric
  data, exact attributes) and rebuild the values with pelk_mm's code:
  numpy's unpickling code never runs with arguments from the file.

A refusal names the file and what was refused: a global that could run code,
a value that is not plain data, or a file that is not a checkpoint at all.
The allow-list is applied only inside these loaders
(``torch.serialization.safe_globals``), so ``torch.load`` called anywhere
else behaves as it does without pelk_mm.

For a trusted file that needs more (a legacy checkpoint pickling other
objects), set ``PELK_MM_TRUST_CHECKPOINTS=1``: files are then loaded with
``weights_only=False``, which runs whatever code they contain, with a
warning each time.
"""
import codecs
import collections
import functools
import io
import os
import os.path as osp
import pickle
import re
import types
import urllib.parse
import warnings
import zipfile
from typing import Any, Dict, Optional, Union

import _compat_pickle
import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.runner import CheckpointLoader
from mmengine.runner import checkpoint as mmengine_checkpoint

from ..ops.torch_features import has
from .checkpoint_fit import require_file
from .pickled_values import REFUSED, rebuild, stand_ins

TRUST_VARIABLE = 'PELK_MM_TRUST_CHECKPOINTS'

#: What the refusal of a global says, whichever unpickler refused it.
_REFUSED_GLOBAL = 'Weights only load failed'


@functools.lru_cache(maxsize=None)
def _allowed_by_name() -> Dict[str, Any]:
    """Every global a checkpoint may name, by the name it is pickled under:
    torch's weights-only ones and the stand-ins of :func:`stand_ins`."""
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
    allowed.update({name: obj for obj, name in stand_ins()})
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
                f'{_REFUSED_GLOBAL}: GLOBAL {module}.{name} is not allowed')
        return found


def _restricted_load(file, **kwargs) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


#: ``torch.load``'s ``pickle_module`` of the restricted unpickler.
restricted_pickle = types.SimpleNamespace(
    __name__='pelk_mm_restricted_pickle',
    Unpickler=RestrictedUnpickler,
    load=_restricted_load)


def load_checkpoint_file(file: Union[str, io.BytesIO],
                         name: str,
                         map_location=None,
                         mmap: bool = False) -> Any:
    """Read a checkpoint that cannot run code (see the module's text).

    Args:
        file (str | io.BytesIO): A local path or the file's bytes.
        name (str): What the messages call it (its path or URL).
        map_location: Passed to :func:`torch.load`.
        mmap (bool): Map the tensors of a local file in the zip format
            (every file ``torch.save`` writes) instead of reading them: for
            a look at the file's structure, whose tensors are not used.

    Raises:
        RuntimeError: If the file is not a readable checkpoint, holds a
            global outside the allow-list (the message names it and the
            opt-in for trusted files) or a numpy value or HistoryBuffer that
            is not plain data.
    """
    if os.environ.get(TRUST_VARIABLE) == '1':
        warnings.warn(
            f'{TRUST_VARIABLE}=1: loading {name!r} with weights_only=False, '
            f'which runs any code the file contains; unset it for files you '
            f'did not write yourself')
        return torch.load(file, map_location=map_location, weights_only=False)
    options = dict(map_location=map_location)
    if mmap and isinstance(file, str) and zipfile.is_zipfile(file):
        options['mmap'] = True
    try:
        if has('safe_globals'):
            with torch.serialization.safe_globals(list(stand_ins())):
                loaded = torch.load(file, weights_only=True, **options)
        else:
            loaded = torch.load(
                file,
                weights_only=False,
                pickle_module=restricted_pickle,
                **options)
        return rebuild(loaded)
    except Exception as err:  # torch raises many types for a bad file
        raise _refusal(name, err) from None


# How torch's weights-only unpickler and pelk_mm's refuse an object that
# could run code (a global, a call or a class outside the allow-list).
_COULD_RUN_CODE = re.compile(
    r'GLOBAL (\S+)|unrecognized function|Can only (create|build)|'
    r'Unsupported class')


def _refusal(name: str, err: Exception) -> RuntimeError:
    """The error for a checkpoint that did not load, by why it did not."""
    text = str(err)
    if REFUSED in text:
        detail = text[text.index(REFUSED) + len(REFUSED):].lstrip(': ')
        detail = detail.split('\n')[0]
        return RuntimeError(
            f'refused to load checkpoint {name!r}: it holds a value that is '
            f'not plain data ({detail}). The file is crafted or damaged: '
            f'get it again from its source, or re-save its tensors with '
            f'plain torch.save.')
    found = _COULD_RUN_CODE.search(text)
    if isinstance(err, pickle.UnpicklingError) and found:
        what = (f'the global {found.group(1)}'
                if found.group(1) else found.group(0))
        return RuntimeError(
            f'refused to load checkpoint {name!r}: it holds objects that '
            f'a checkpoint of weights does not need and that could run '
            f'code ({what}). If you trust the file '
            f'(you wrote it, or it comes from a source you trust), load '
            f'it with the environment variable {TRUST_VARIABLE}=1, or '
            f're-save its tensors with plain torch.save.')
    reason = re.search(r'WeightsUnpickler error:\s*(\S[^\n]*)', text)
    reason = reason.group(1) if reason else text.split('\n')[0]
    return RuntimeError(
        f'could not read checkpoint {name!r}: it is truncated, corrupt or '
        f'not a PyTorch checkpoint ({type(err).__name__}: {reason[:200]}). '
        f'Save, download or convert it again.')


def read_checkpoint(filename: str, map_location=None) -> Any:
    """Load a checkpoint from a path, a URL or any scheme mmengine knows,
    through pelk_mm's loaders (what ``CheckpointLoader.load_checkpoint``
    does once pelk_mm is imported)."""
    return CheckpointLoader.load_checkpoint(
        filename, map_location, logger='silent')


def load_from_local(filename: str, map_location=None, mmap=False) -> Any:
    """Load a local checkpoint (``~`` is expanded) through
    :func:`load_checkpoint_file` (``mmap``: as there).

    Raises:
        FileNotFoundError: If the file does not exist.
        RuntimeError: As :func:`load_checkpoint_file`.
    """
    path = require_file(filename, 'load_from, --resume or init_cfg.checkpoint',
                        'check the path')
    return load_checkpoint_file(path, path, map_location, mmap)


def _download(url: str, model_dir: Optional[str], progress: bool) -> str:
    """``url`` in torch.hub's cache (``model_dir``): downloaded once."""
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    path = osp.join(model_dir,
                    osp.basename(urllib.parse.urlparse(url).path) or 'index')
    if not osp.isfile(path):
        try:  # to a temporary file, then renamed
            torch.hub.download_url_to_file(url, path, progress=progress)
        except Exception as err:
            raise RuntimeError(
                f'could not download checkpoint {url!r} ({type(err).__name__}'
                f': {err}): check the URL and the network, or download it '
                f'yourself and give its path') from None
    return path


def load_from_http(filename: str,
                   map_location=None,
                   model_dir: Optional[str] = None,
                   progress: Optional[bool] = None) -> Any:
    """Load a checkpoint given by URL: downloaded into torch.hub's cache
    (by the first process of each machine first, as mmengine does), then
    read by :func:`load_checkpoint_file`. ``progress``: draw a progress bar
    (by default where stdin is a terminal)."""
    progress = os.isatty(0) if progress is None else progress
    rank, world_size = get_dist_info()
    if rank == 0:
        path = _download(filename, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = _download(filename, model_dir, progress)
    return load_checkpoint_file(path, f'{filename} (cached as {path})',
                                map_location)


def load_from_model_zoo(filename: str, map_location=None) -> Any:
    """``torchvision://``, ``modelzoo://``, ``open-mmlab://``,
    ``openmmlab://`` and ``mmcls://`` names, resolved with mmengine's
    tables, then loaded by URL (or from mmengine's home)."""
    scheme, model = filename.split('://', 1)
    if scheme in ('torchvision', 'modelzoo'):
        urls = mmengine_checkpoint.get_torchvision_models()
    elif scheme == 'mmcls':
        urls = mmengine_checkpoint.get_mmcls_models()
    else:
        urls = mmengine_checkpoint.get_external_models()
        model = mmengine_checkpoint.get_deprecated_model_names().get(
            model, model)
    if model not in urls:
        raise KeyError(f'{filename!r}: mmengine knows no model {model!r} '
                       f'under {scheme}://')
    url = urls[model]
    if url.startswith(('http://', 'https://')):
        checkpoint = load_from_http(url, map_location)
    else:
        checkpoint = load_from_local(
            osp.join(mmengine_checkpoint._get_mmengine_home(), url),
            map_location)
    if scheme == 'mmcls':
        checkpoint = mmengine_checkpoint._process_mmcls_checkpoint(checkpoint)
    return checkpoint


def load_from_file_backend(filename: str, map_location=None) -> Any:
    """``s3://`` and ``petrel://`` paths, read with mmengine's petrel file
    backend, then by :func:`load_checkpoint_file`."""
    backend = get_file_backend(filename, backend_args={'backend': 'petrel'})
    return load_checkpoint_file(
        io.BytesIO(backend.get(filename)), filename, map_location)


def refuse_pavi(filename: str, map_location=None) -> Any:
    raise RuntimeError(
        f'{filename!r}: pelk_mm reads checkpoints only through its '
        f'weights-only loader, which has no pavi:// route: download the file '
        f'and give its path')


# '' matches every path not claimed by a longer prefix.
for _prefixes, _loader in (
    ('', load_from_local),
    (('http://', 'https://'), load_from_http),
    (('torchvision://', 'modelzoo://', 'open-mmlab://', 'openmmlab://',
      'mmcls://'), load_from_model_zoo),
    ((r'(\S+\:)?s3://', r'(\S+\:)?petrel://'), load_from_file_backend),
    ('pavi://', refuse_pavi),
):
    CheckpointLoader.register_scheme(
        prefixes=_prefixes, loader=_loader, force=True)
