"""Not a tool: the checks tools/train.py and tools/test.py make of a run's
inputs before anything is built, with errors that say what is missing and
how to get it."""
import os
import os.path as osp
from typing import Iterator, List

from mmengine.config import Config

from pelk_mm.tasks import task_of_dataset

GENERATE = 'python tools/dataset_converters/generate_dataset.py'
CONVERTER = 'tools/model_converters/cls_to_backbone.py'


def _walk(node) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk(value)


def missing_pretrained(model_cfg) -> List[str]:
    """Local checkpoints named by ``Pretrained`` init_cfgs anywhere in
    ``model_cfg`` (a model config, or an init_cfg) that do not exist."""
    missing = []
    for node in _walk(model_cfg):
        checkpoint = node.get('checkpoint')
        if node.get('type') == 'Pretrained' and isinstance(checkpoint, str) \
                and '://' not in checkpoint and \
                not osp.isfile(osp.expanduser(checkpoint)):
            missing.append(checkpoint)
    return missing


def missing_pretrained_message(path: str) -> str:
    return (
        f'pretrained backbone checkpoint {path!r} (model.backbone.init_cfg.'
        f'checkpoint) does not exist. Convert an ImageNet classification '
        f'checkpoint of the same arch with `python {CONVERTER} CLS.pth '
        f'{path}`, point init_cfg.checkpoint at your file with '
        f'`--cfg-options model.backbone.init_cfg.checkpoint=PATH`, or train '
        f'from scratch with `--cfg-options model.backbone.init_cfg=None`.')


def _dataset_cfgs(cfg: Config, loaders) -> Iterator[tuple]:
    """(option path, dataset cfg) of each dataloader's innermost dataset."""
    for loader in loaders:
        dataset, option = (cfg.get(loader) or {}).get('dataset'), loader
        while isinstance(dataset, dict) and 'dataset' in dataset:
            dataset = dataset['dataset']  # RepeatDataset and friends
            option += '.dataset'
        if isinstance(dataset, dict):
            yield f'{option}.dataset.data_root', dataset


def check_data_roots(
    cfg: Config,
    loaders=('train_dataloader', 'val_dataloader', 'test_dataloader')
) -> None:
    """Raise if a dataset's root or one of its folders is missing or empty.

    Raises:
        FileNotFoundError: naming the path expected and, for the datasets
            the project can generate, the command that makes them.
    """
    for option, dataset in _dataset_cfgs(cfg, loaders):
        root = dataset.get('data_root', '')
        prefixes = dataset.get('data_prefix') or {}
        paths = [root] if root else []
        if isinstance(prefixes, str):
            prefixes = dict(img=prefixes)
        paths += [osp.join(root, p) for p in prefixes.values() if p]
        if dataset.get('split'):  # mmpretrain's ImageNet: root/split
            paths.append(osp.join(root, dataset['split']))
        if dataset.get('ann_file'):
            paths.append(osp.join(root, dataset['ann_file']))
        for path in paths:
            missing = not osp.exists(path)
            empty = not missing and path != root and osp.isdir(path) and \
                not _holds_files(path)
            if missing or empty:
                generate = generate_hint(str(dataset.get('type', '')), root)
                problem = 'which does not exist' if missing else \
                    'which is empty'
                raise FileNotFoundError(
                    f'{dataset.get("type", "dataset")} expects {path!r}, '
                    f'{problem} (data_root={root!r}).{generate} '
                    f'or point the config at your copy with `--cfg-options '
                    f'{option}=PATH`.')


def generate_hint(dataset_type: str, data_root: str) -> str:
    """How to make the synthetic version of a dataset type the project
    generates (a sentence ending in a comma), or ''."""
    task = task_of_dataset(dataset_type, by='dataset_type')
    if task is None:
        return ''
    root = data_root
    if task.root_of_data_root:  # ADE20K's data_root is the folder in root
        root = osp.dirname(data_root.rstrip('/')) or '.'
    return (f' Generate the small synthetic version with `{GENERATE} '
            f'{task.dataset} {root}`,')


def _holds_files(path: str) -> bool:
    """Whether a folder holds a file, at any depth (stops at the first)."""
    for _, _, files in os.walk(path):
        if files:
            return True
    return False


def sync_bn_to_bn(node) -> int:
    """Replace SyncBN norm configs by BN in place (CPU runs); return count."""
    count = 0
    for item in _walk(node):
        if item.get('type') in ('SyncBN', 'MMSyncBN'):
            item['type'] = 'BN'
            count += 1
    return count
