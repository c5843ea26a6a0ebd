"""Adapting a config to the machine it runs on (used by tools/*.py)."""
import os

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log

from .preflight import sync_bn_to_bn


def setup_device(cfg: Config, amp: bool = False) -> None:
    """Make ``cfg`` runnable here. Nothing changes where a GPU is present.

    Without a GPU: SyncBN (CUDA only) becomes BN, and a distributed run
    (``--launcher pytorch``, i.e. torchrun) uses the gloo backend, with the
    process group started here, since mmengine's ``init_dist`` calls
    ``torch.cuda.set_device``, and DDP without ``device_ids``.

    Raises:
        SystemExit: for ``--amp`` or a non-torchrun launcher without a GPU.
    """
    if torch.cuda.is_available():
        return
    if amp:
        raise SystemExit(
            'error: --amp needs a GPU (mmengine\'s AmpOptimWrapper refuses '
            'to run on the CPU); drop --amp on this machine.')
    if sync_bn_to_bn(cfg.model):
        print_log('no GPU: SyncBN layers are built as BN', logger='current')
    if cfg.get('launcher', 'none') == 'none':
        return
    if cfg.launcher != 'pytorch':
        raise SystemExit(
            f'error: without a GPU only --launcher pytorch (torchrun, see '
            f'tools/dist_train.sh) is supported, got {cfg.launcher!r}')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = \
        'gloo'
    cfg.model_wrapper_cfg = dict(
        type='MMDistributedDataParallel', device_ids=None)
    if not dist.is_initialized():
        dist.init_process_group(
            'gloo', rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']))
