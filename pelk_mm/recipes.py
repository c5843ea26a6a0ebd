"""PeLK's recipes, in parts, for a user's own config.

mmengine resolves ``pkg::`` bases from a fixed table of OpenMMLab packages,
before ``custom_imports`` runs, so a config of one's own cannot name
``pelk_mm::`` in ``_base_``. Its body may import, though, and what
:func:`recipe_part` returns is a part of one of PeLK's shipped configs (the
files under ``configs/``, in a wheel ``pelk_mm/.mim/configs/``), read with
those configs' own bases, so that a stock ``mmseg::`` or ``mmdet::`` model
takes PeLK's backbone, schedule and sparse setting without copying a number
from them::

    _base_ = [  # first: mmengine reads a config with _base_ as a plain one
        'mmseg::_base_/models/upernet_r50.py',
        'mmseg::_base_/datasets/ade20k.py',
        'mmseg::_base_/default_runtime.py',
        'mmseg::_base_/schedules/schedule_160k.py',
    ]
    from pelk_mm.recipes import recipe_part, stage_widths

    custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)
    PELK = 'upernet_pelk_t_ade20k.py'
    model = dict(
        backbone=recipe_part(PELK, 'model.backbone'),
        decode_head=dict(in_channels=stage_widths('tiny')),
        auxiliary_head=dict(in_channels=stage_widths('tiny')[2]))
    optim_wrapper = recipe_part(PELK, 'optim_wrapper')
    param_scheduler = recipe_part(PELK, 'param_scheduler')
    custom_hooks = recipe_part(PELK, 'custom_hooks')  # the sparse setting

A dict part replaces what the user's bases hold under its key
(``_delete_=True``), so no key of a stock ResNet backbone or SGD optimizer
is left in PeLK's.
"""
import copy
import functools
import os
import os.path as osp
from typing import Any, List

from mmengine.config import Config, ConfigDict

CONFIG_ROOTS = (
    # installed (wheel, or the links of an editable install)
    osp.join(osp.dirname(osp.abspath(__file__)), '.mim', 'configs'),
    # a clone
    osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs'),
)


def config_path(name: str) -> str:
    """The path of one of PeLK's configs, by its name under ``configs/``
    (``'upernet_pelk_t_ade20k.py'``, ``'demo/pelk_mini_in1k_demo.py'``).

    Raises:
        FileNotFoundError: If no shipped config has that name (the message
            lists those that do).
    """
    for root in CONFIG_ROOTS:
        path = osp.join(root, name)
        if osp.isfile(path):
            return path
    raise FileNotFoundError(f'pelk_mm ships no config {name!r}; its configs: '
                            f'{", ".join(shipped_configs())}')


def shipped_configs() -> List[str]:
    """The names of PeLK's configs (paper recipes and demos)."""
    for root in CONFIG_ROOTS:
        if osp.isdir(root):
            names = [
                osp.relpath(osp.join(folder, file), root)
                for folder in ('', 'demo')
                for file in sorted(os.listdir(osp.join(root, folder)))
                if file.endswith('.py')
            ]
            return names
    return []


@functools.lru_cache(maxsize=None)
def _load(name: str) -> Config:
    return Config.fromfile(config_path(name))


def recipe_part(config: str, key: str) -> Any:
    """A part of one of PeLK's configs, to set under ``key`` in a config
    of one's own.

    Args:
        config (str): The config's name under ``configs/``.
        key (str): A dotted key (``'optim_wrapper'``, ``'model.backbone'``).

    Returns:
        A copy of the part, as plain dicts and lists; a dict is marked
        ``_delete_=True`` so that it replaces the user's base's entry.

    Raises:
        FileNotFoundError: If ``config`` is no shipped config.
        KeyError: If it has no ``key`` (the message lists its keys there).
    """
    node: Any = _load(config).to_dict()
    for depth, part in enumerate(key.split('.')):
        if not isinstance(node, (dict, ConfigDict)) or part not in node:
            where = '.'.join(key.split('.')[:depth]) or 'the top level'
            keys = sorted(node) if isinstance(node, dict) else []
            raise KeyError(f'{config} has no {key!r} (keys at {where}: '
                           f'{", ".join(keys)})')
        node = node[part]
    part = _plain(copy.deepcopy(node))
    if isinstance(part, dict):
        part = dict(_delete_=True, **part)
    return part


def _plain(value: Any) -> Any:
    """ConfigDicts as dicts (a config file's values are dumped as such)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def stage_widths(arch: str) -> List[int]:
    """The channels of PeLK ``arch``'s four stages (a neck's or a decode
    head's ``in_channels``): ``[124, 249, 499, 998]`` for tiny and small,
    ``[166, 332, 665, 1331]`` for base and base-101."""
    from .models import PeLK
    if arch not in PeLK.arch_settings:
        raise KeyError(f'PeLK has no arch {arch!r}; archs: '
                       f'{", ".join(PeLK.arch_settings)}')
    return list(PeLK.arch_settings[arch]['channels'])


__all__ = ['config_path', 'recipe_part', 'shipped_configs', 'stage_widths']
