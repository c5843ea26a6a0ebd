"""Local checkpoint loading that works on torch >= 2.6.

mmengine 0.10.7 calls ``torch.load(filename)`` without ``weights_only``. Since
torch 2.6 that defaults to ``True`` and refuses anything but tensors and plain
containers, so ``resume=True`` (the message hub holds ``HistoryBuffer``
objects) and checkpoints whose meta holds numpy scalars fail to load. We
register a loader for local paths through mmengine's own extension point,
:meth:`CheckpointLoader.register_scheme`, that restores the pre-2.6 behaviour
(``weights_only=False``) and turns unreadable files into errors that name the
file. As with any pickle, only load checkpoints you trust.
"""
import os.path as osp

import torch
from mmengine.runner import CheckpointLoader


def load_from_local(filename: str, map_location=None) -> dict:
    """Load a checkpoint from a local path, as mmengine's local loader.

    Args:
        filename (str): Path of the checkpoint (``~`` is expanded).
        map_location: Passed to :func:`torch.load`.

    Returns:
        dict: The loaded checkpoint.

    Raises:
        FileNotFoundError: If the file does not exist.
        RuntimeError: If the file exists but is not a readable checkpoint.
    """
    path = osp.expanduser(filename)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'checkpoint file {path!r} not found. Check the path given to '
            f'`load_from`, `--resume` or `init_cfg.checkpoint`.')
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a bad file
        raise RuntimeError(
            f'could not read checkpoint {path!r} ({type(err).__name__}: '
            f'{err}). The file is truncated, corrupt or not a PyTorch '
            f'checkpoint: save or convert it again.') from err


# '' matches every path not claimed by a longer prefix (http://, s3://, ...).
CheckpointLoader.register_scheme(
    prefixes='', loader=load_from_local, force=True)


def extract_backbone(checkpoint: dict, raw: bool = False) -> dict:
    """The backbone weights of a classifier checkpoint, keys ``backbone.*``.

    With mmengine's ``EMAHook``, a checkpoint's ``state_dict`` holds the
    averaged (EMA) weights, meant for deployment, and ``ema_state_dict`` the
    raw ones (keys ``module.*``). Weights under SLaK's dynamic sparsity are
    multiplied by the masks saved with them (``checkpoint['sparsity']``), so
    the output is exactly as sparse as the trained model.

    Args:
        checkpoint (dict): As saved by mmengine / mmpretrain.
        raw (bool): Take the raw weights instead of the EMA ones (only for
            checkpoints written with EMAHook). Defaults to False.

    Returns:
        dict: ``{'backbone.<name>': tensor}``, loadable with
        ``init_cfg=dict(type='Pretrained', prefix='backbone.')``.

    Raises:
        KeyError: If the checkpoint has no such weights.
    """
    if raw:
        if 'ema_state_dict' not in checkpoint:
            raise KeyError('the checkpoint was not written with EMAHook (no '
                           'ema_state_dict): its state_dict already holds '
                           'the raw weights; convert without --raw')
        state = {k[len('module.'):]: v
                 for k, v in checkpoint['ema_state_dict'].items()
                 if k.startswith('module.')}
    else:
        state = checkpoint.get('state_dict', checkpoint)
    backbone = {k: v for k, v in state.items() if k.startswith('backbone.')}
    if not backbone:
        raise KeyError(
            f'no backbone.* weights in the checkpoint (its keys look like '
            f'{sorted(state)[:3]}); is it a classifier checkpoint?')
    masks = checkpoint.get('sparsity', {}).get('masks', {})
    for name, mask in masks.items():
        if name in backbone:
            backbone[name] = backbone[name] * mask.to(backbone[name].dtype)
    return backbone
