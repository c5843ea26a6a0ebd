"""Whether a checkpoint fits a model, said one way everywhere.

The backbone's ``Pretrained`` init (:meth:`pelk_mm.models.PeLK.init_weights`),
:class:`~pelk_mm.runtime.CheckpointFitsHook` (``load_from`` and
``tools/test.py``), :func:`pelk_mm.deployment.load_model` and the
converters read checkpoints through these: one way to find the weights
(:func:`state_dict_of`, :func:`strip_prefix`), one error for a file that
does not fit (:class:`CheckpointMismatchError`, :func:`mismatch_error`) and
one for a file that is not there (:func:`require_file`); and the strict
``Pretrained`` load of an ``init_cfg`` (:func:`load_pretrained`).
"""
import os.path as osp
import re
from typing import Dict, Iterable, NamedTuple, Optional

import torch.nn as nn

#: mmengine's wrappers (DDP, EMA) save their module's weights under it.
WRAPPER_PREFIX = 'module.'


class CheckpointMismatchError(ValueError):
    """A checkpoint whose weights do not fit the model they are for."""


def require_file(path: str, option: str, fix: str = '') -> str:
    """``path`` with ``~`` expanded, where it is a local file (or a URL).

    Args:
        path (str): The checkpoint.
        option (str): The setting that named it (for the message), e.g.
            ``'init_cfg.checkpoint'``.
        fix (str): What to do instead, appended to the message.

    Raises:
        FileNotFoundError: Naming the file, the setting and ``fix``.
    """
    if '://' in path:
        return path
    expanded = osp.expanduser(path)
    if not osp.isfile(expanded):
        message = f'checkpoint {path!r} ({option}) does not exist'
        raise FileNotFoundError(f'{message}: {fix}' if fix else message)
    return expanded


def state_dict_of(checkpoint: dict) -> Dict:
    """The weights of a checkpoint: its ``state_dict``, or the dict itself
    for a file of bare weights."""
    return checkpoint.get('state_dict', checkpoint)


def strip_prefix(state: Dict,
                 prefix: Optional[str],
                 keep_others: bool = False) -> Dict:
    """``state`` with ``prefix`` removed from its keys.

    Args:
        state (dict): Weights.
        prefix (str, optional): E.g. ``'backbone.'`` (a dot is added if
            missing); None or '' returns ``state``.
        keep_others (bool): Keep keys without the prefix as they are (for
            a wrapper's prefix, which only some files have); otherwise only
            the keys under it are returned.
    """
    if not prefix:
        return state
    prefix = prefix if prefix.endswith('.') else prefix + '.'
    return {
        key[len(prefix):] if key.startswith(prefix) else key: value
        for key, value in state.items()
        if keep_others or key.startswith(prefix)
    }


def without_wrapper_prefix(state: Dict) -> Dict:
    """``state`` with a DDP/EMA wrapper's ``module.`` taken off its keys."""
    return strip_prefix(state, WRAPPER_PREFIX, keep_others=True)


def mismatch_error(path: str,
                   target: str,
                   missing: Iterable[str] = (),
                   unexpected: Iterable[str] = (),
                   total: Optional[int] = None,
                   keys: Iterable[str] = (),
                   what: str = 'weights',
                   hint: str = '') -> CheckpointMismatchError:
    """The error of a checkpoint that leaves weights of ``target`` without
    values, or holds weights it does not have.

    Args:
        path (str): The checkpoint.
        target (str): What it was loaded into, e.g. ``"the model"``.
        missing (Iterable[str]): Names ``target`` has and the file lacks.
        unexpected (Iterable[str]): Names the file has and ``target`` not.
        total (int, optional): How many ``what`` ``target`` has.
        keys (Iterable[str]): The file's keys (examples are shown).
        what (str): What is counted (``'weights'``, ``'parameters'``).
        hint (str): What to do, appended.
    """
    missing, unexpected = list(missing), list(unexpected)
    parts = []
    if missing:
        of = f'{len(missing)} of its {total}' if total is not None else \
            f'{len(missing)} of its'
        parts.append(f'leaves {of} {what} unloaded (e.g. '
                     f'{", ".join(missing[:3])})')
    if unexpected:
        parts.append(f'holds {len(unexpected)} {what} it does not have '
                     f'(e.g. {", ".join(unexpected[:3])})')
    looks = sorted(keys)[:3]
    shown = f"; the file's keys look like {', '.join(looks)}" if looks else ''
    return CheckpointMismatchError(
        f'checkpoint {path!r} does not fit {target}: it '
        f'{" and ".join(parts)}{shown}. It was written for another model or '
        f'config, or its keys were renamed. {hint}'.rstrip())


def shape_mismatch_error(path: str,
                         target: str,
                         error: RuntimeError,
                         hint: str = '') -> CheckpointMismatchError:
    """The error of a checkpoint whose weights have other shapes than
    ``target``'s (``load_state_dict``'s ``error``, first lines)."""
    shapes = '; '.join(line.strip().rstrip('.')
                       for line in str(error).splitlines()[1:4])
    return CheckpointMismatchError(
        f'checkpoint {path!r} does not fit {target}: shapes differ: '
        f'{shapes}. {hint}'.rstrip())


class Fit(NamedTuple):
    """What :func:`load_fitting` loaded: the names it left at their
    initialisation because ``allow_missing`` allows it, and the file's
    names the module does not use."""
    allowed_missing: list
    unexpected: list


def load_fitting(module: nn.Module,
                 state: Dict,
                 path: str,
                 target: str,
                 allow_missing: Optional[str] = None,
                 allow_unexpected: bool = False,
                 hint: str = '',
                 shape_hint: Optional[str] = None) -> Fit:
    """Load ``state`` into ``module``, refusing what does not fit.

    Args:
        module (nn.Module): Where to load.
        state (dict): The weights, keys as ``module.state_dict()``'s.
        path (str): The checkpoint, for messages.
        target (str): What ``module`` is, for messages.
        allow_missing (str, optional): A regular expression of names the
            file may lack (they keep their initialisation).
        allow_unexpected (bool): Whether the file may hold names the module
            does not have.
        hint (str): What to do, appended to the error.
        shape_hint (str, optional): What to do where shapes differ
            (defaults to ``hint``).

    Returns:
        Fit: The names left out as allowed, and the unexpected ones.

    Raises:
        CheckpointMismatchError: Where shapes differ, or names are missing
            (or unexpected) beyond what is allowed.
    """
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes (re-gridding aside)
        raise shape_mismatch_error(
            path, target, error,
            hint if shape_hint is None else shape_hint) from None
    allowed = [
        k for k in result.missing_keys
        if allow_missing and re.match(allow_missing, k)
    ]
    missing = [k for k in result.missing_keys if k not in allowed]
    unexpected = [] if allow_unexpected else list(result.unexpected_keys)
    if missing or unexpected:
        raise mismatch_error(
            path,
            target,
            missing,
            unexpected,
            total=len(module.state_dict()),
            keys=state,
            hint=hint)
    return Fit(allowed, list(result.unexpected_keys))


def load_pretrained(module: nn.Module,
                    cfg: dict,
                    target: str,
                    allow_missing: Optional[str] = None,
                    allowed_why: str = '',
                    hint: str = '') -> Fit:
    """Load the ``Pretrained`` checkpoint of an ``init_cfg`` into
    ``module``, refusing a file that does not fit (mmengine's own
    ``Pretrained`` only warns): it must hold weights under ``cfg['prefix']``
    and leave none of the module's unloaded beyond ``allow_missing``.

    Args:
        module (nn.Module): Where to load.
        cfg (dict): The ``init_cfg`` (``checkpoint``, ``prefix``,
            ``map_location``); the checkpoint is read by mmengine's
            ``CheckpointLoader`` (pelk_mm's safe loaders).
        target (str): What ``module`` is, for messages.
        allow_missing (str, optional): As :func:`load_fitting`.
        allowed_why (str): Why those may be missing, for the log.
        hint (str): What to do, appended to an error.

    Raises:
        CheckpointMismatchError: If it holds no weights under the prefix,
            or does not fit (:func:`load_fitting`).
    """
    from mmengine.logging import MMLogger
    from mmengine.runner import CheckpointLoader
    path, prefix = cfg['checkpoint'], cfg.get('prefix')
    checkpoint = CheckpointLoader.load_checkpoint(
        path, map_location=cfg.get('map_location', 'cpu'))
    state = strip_prefix(state_dict_of(checkpoint), prefix)
    if not state:
        keys = sorted(state_dict_of(checkpoint))[:3]
        raise CheckpointMismatchError(
            f'checkpoint {path!r} holds no weights under the prefix '
            f'{prefix!r} of init_cfg (its keys look like {keys}). For a '
            f'backbone file or a classifier checkpoint the prefix is '
            f'"backbone."; for a file of bare backbone keys, no prefix.')
    fit = load_fitting(
        module,
        state,
        path,
        target,
        allow_missing=allow_missing,
        allow_unexpected=True,
        hint=hint)
    logger = MMLogger.get_current_instance()
    logger.info(f'loaded {len(state) - len(fit.unexpected)} weights of '
                f'{target} from {path}')
    if fit.allowed_missing:
        logger.info(f'not in {path} ({allowed_why}), initialised: '
                    f'{fit.allowed_missing}')
    if fit.unexpected:
        logger.warning(f'{path} has weights {target} does not use: '
                       f'{fit.unexpected[:10]}')
    return fit
