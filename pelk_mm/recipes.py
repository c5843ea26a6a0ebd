"""PeLK's recipes, in parts, for a user's own config.

mmengine resolves ``pkg::`` bases from a fixed table of OpenMMLab packages,
before ``custom_imports`` runs, so a config of one's own cannot name
``pelk_mm::`` in ``_base_``. Its body may import, though, and what
:func:`recipe_part` returns is a part of one of PeLK's shipped configs (the
files under ``configs/``, in a wheel ``pelk_mm/.mim/configs/``), read with
those configs' own bases, so that a stock ``mmseg::`` or ``mmdet::`` model
takes PeLK's backbone, schedule and sparse setting without copying a number
from them (``tests/user_project/`` holds this one and a Mask R-CNN)::

    # _base_ first: mmengine reads a config with _base_ as a plain one
    _base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
    from pelk_mm.recipes import recipe_part, stage_widths  # noqa: E402

    custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)
    model = dict(
        pretrained=None,  # the stock model's ResNet-50 weights
        backbone=recipe_part('upernet_pelk_t_ade20k.py', 'model.backbone'),
        decode_head=dict(in_channels=stage_widths('tiny')),
        auxiliary_head=dict(in_channels=stage_widths('tiny')[2]))
    optim_wrapper = recipe_part('upernet_pelk_t_ade20k.py', 'optim_wrapper')
    param_scheduler = recipe_part('upernet_pelk_t_ade20k.py',
                                  'param_scheduler')
    custom_hooks = recipe_part('upernet_pelk_t_ade20k.py', 'custom_hooks')

(Module-level names of the config other than these, such as a variable
holding the config's name, would become keys of the config.)

A dict part replaces what the user's bases hold under its key
(``_delete_=True``), so no key of a stock ResNet backbone or SGD optimizer
is left in PeLK's.
"""
import copy
import functools
import os
import os.path as osp
from typing import Any, List

from mmengine.config import Config

from .model_zoo import MIM_ROOT

CONFIG_ROOTS = (
    # installed (wheel, or the links of an editable install)
    osp.join(MIM_ROOT, 'configs'),
    # a clone not installed
    osp.join(osp.dirname(osp.dirname(MIM_ROOT)), 'configs'),
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
            return [
                osp.join(folder, file) for folder in ('', 'demo')
                for file in sorted(os.listdir(osp.join(root, folder)))
                if file.endswith('.py')
            ]
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
        if not isinstance(node, dict) or part not in node:
            where = '.'.join(key.split('.')[:depth]) or 'the top level'
            keys = sorted(node) if isinstance(node, dict) else []
            raise KeyError(f'{config} has no {key!r} (keys at {where}: '
                           f'{", ".join(keys)})')
        node = node[part]
    part = copy.deepcopy(node)  # to_dict() gives plain dicts and lists
    if isinstance(part, dict):
        part = dict(_delete_=True, **part)
    return part


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
