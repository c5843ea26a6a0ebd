"""Not a tool: the checks tools/train.py and tools/test.py make of a run's
inputs before anything is built, with errors that say what is missing and
how to get it."""
import os
import os.path as osp
import shutil
import subprocess
from typing import Iterator, List, Optional

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
                    'which is empty (or holds hidden files only)'
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
    """Whether a folder holds a file, at any depth (stops at the first);
    hidden files (``.DS_Store``, ``._*``) and hidden folders do not count:
    the datasets skip them."""
    for _, folders, files in os.walk(path):
        folders[:] = [f for f in folders if not f.startswith('.')]
        if any(not name.startswith('.') for name in files):
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


def unusable_gpus_message(torch_cuda: Optional[str]) -> Optional[str]:
    """Where ``nvidia-smi`` lists GPUs that torch cannot use (torch sees
    none), what to do; None otherwise, or where the user hid the GPUs
    (``CUDA_VISIBLE_DEVICES`` empty or -1) to run on the CPU.

    Args:
        torch_cuda (str, optional): ``torch.version.cuda``.
    """
    if os.environ.get('CUDA_VISIBLE_DEVICES', None) in ('', '-1'):
        return None
    smi = shutil.which('nvidia-smi')
    if smi is None:
        return None
    try:
        listed = subprocess.run(
            [smi, '--query-gpu=name,driver_version', '--format=csv,noheader'],
            capture_output=True,
            text=True,
            timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not listed:
        return None
    name, _, driver = listed[0].partition(',')
    return (f'error: nvidia-smi lists {len(listed)} GPU(s) ({name.strip()}, '
            f'driver {driver.strip() or "unknown"}), but torch (built for '
            f'CUDA {torch_cuda or "none: a CPU-only build"}) can use none of '
            f'them, so this run would silently train on the CPU. torch '
            f'2.12.1 from PyPI needs an NVIDIA driver of the R580 series or '
            f'newer (CUDA 13.0): update the driver, or install a torch built '
            f'for your driver\'s CUDA. To run on the CPU on purpose, set '
            f'CUDA_VISIBLE_DEVICES=-1.')
