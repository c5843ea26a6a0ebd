"""Not a tool: what tools/train.py and tools/test.py share (their common
flags, loading the config, adapting it to the machine it runs on, the fit
check of the checkpoint they load, and how they report an error under
torchrun)."""
import argparse
import difflib
import inspect
import logging
import os
import os.path as osp
from typing import Callable, List, Tuple

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

from pelk_mm.runtime import CheckpointFitsHook
from preflight import sync_bn_to_bn, unusable_gpus_message


def run_main(main: Callable[[], None]) -> None:
    """Run a tool's ``main``. Under torchrun, an error that stops a rank
    (an exception, or a ``SystemExit`` with a message: the tools' clear
    errors) is also written to torchrun's error file, as torch's ``@record``
    does for exceptions, so that the failure summary which ends torchrun's
    output shows it, where it would say only 'To enable traceback see ...'
    below the message."""
    if not os.environ.get('TORCHELASTIC_ERROR_FILE'):
        main()
        return
    from torch.distributed.elastic.multiprocessing.errors import (
        get_error_handler, record)

    @record
    def run() -> None:
        try:
            main()
        except SystemExit as stop:
            if not isinstance(stop.code, (int, type(None))):
                get_error_handler().record_exception(stop)
            raise

    run()


def add_fit_check_args(parser: argparse.ArgumentParser, doing: str,
                       source: str) -> None:
    """``--allow-missing`` and ``--allow-nonfinite``, which relax the fit
    check of :func:`check_fit` (help: "``doing`` even if ``source`` ...")."""
    parser.add_argument(
        '--allow-missing',
        action='store_true',
        help=f'{doing} even if {source} leaves weights or buffers of the '
        f'model unloaded or gives them other shapes (they keep their '
        f'initialisation)')
    parser.add_argument(
        '--allow-nonfinite',
        action='store_true',
        help=f'{doing} even if {source} holds NaN or infinite values')


def check_fit(runner, checkpoint: str, args: argparse.Namespace,
              hint: str) -> None:
    """Check that ``checkpoint`` fits the runner's model once it is loaded
    (every weight and buffer, of its shape, finite; relaxed by the flags of
    :func:`add_fit_check_args`); ``hint`` ends the refusal."""
    runner.register_hook(
        CheckpointFitsHook(
            checkpoint,
            hint=hint,
            allow_missing=args.allow_missing,
            allow_nonfinite=args.allow_nonfinite))


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher``, ``--local_rank``."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, e.g. train_cfg.max_iters=10')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the common flags applied (work dir
    defaults to ``./work_dirs/<config name>``, as in OpenMMLab)."""
    cfg = Config.fromfile(args.config)  # also runs custom_imports
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs',
        osp.splitext(osp.basename(args.config))[0])
    check_loop_lengths(cfg)
    for key, meant in misspelt_settings(cfg):
        print_log(
            f'{args.config}: the top-level key {key!r} is not a setting '
            f'mmengine reads (did you mean {meant!r}?); it has no effect',
            logger='current',
            level=logging.WARNING)
    return cfg


def check_loop_lengths(cfg: Config) -> None:
    """Refuse loop lengths that are not whole numbers (``--cfg-options
    train_cfg.max_iters=four`` gives the string 'four'), naming the key."""
    for loop in ('train_cfg', 'val_cfg', 'test_cfg'):
        for key, value in (cfg.get(loop) or {}).items():
            if key.startswith(('max_', 'val_')) and key != 'val_begin' and \
                    not (isinstance(value, int)
                         and not isinstance(value, bool) and value > 0):
                raise SystemExit(f'error: {loop}.{key} must be a whole '
                                 f'number above 0, got {value!r}')


def misspelt_settings(cfg: Config) -> List[Tuple[str, str]]:
    """Top-level keys of ``cfg`` that mmengine's Runner does not read but
    that are spelt nearly as one it does (``randomnes``): (key, setting)
    pairs. A config's own variables (``crop_size``, ``data_root``) are
    not near a setting's name and pass."""
    settings = set(inspect.signature(Runner.__init__).parameters) | {
        '_base_', 'custom_imports', 'default_scope', 'auto_scale_lr',
        'tta_model', 'tta_pipeline', 'launcher'
    }
    # The variables OpenMMLab's configs conventionally define.
    conventional = {
        'train_pipeline', 'val_pipeline', 'test_pipeline', 'dataset_type',
        'data_root', 'backend_args', 'metainfo', 'norm_cfg', 'crop_size'
    }
    found = []
    for key in cfg.keys():
        if key in settings or key in conventional:
            continue
        near = difflib.get_close_matches(key, settings, n=1, cutoff=0.85)
        if near:
            found.append((key, near[0]))
    return found


def setup_device(cfg: Config, amp: bool = False) -> None:
    """Make ``cfg`` runnable here. Nothing changes where a GPU is present.

    Without a GPU: SyncBN (CUDA only) becomes BN, and a distributed run
    (``--launcher pytorch``, i.e. torchrun) uses the gloo backend, with the
    process group started here, since mmengine's ``init_dist`` calls
    ``torch.cuda.set_device``, and DDP without ``device_ids``.

    Raises:
        SystemExit: for ``--amp`` or a non-torchrun launcher without a GPU,
            and where nvidia-smi lists GPUs that torch cannot use (an old
            driver): a silent CPU run would follow.
    """
    if torch.cuda.is_available():
        return
    unusable = unusable_gpus_message(torch.version.cuda)
    if unusable:
        raise SystemExit(unusable)
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
            'gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']))


def build_runner(cfg: Config):
    """The config's runner (``runner_type``, else mmengine's Runner)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return RUNNERS.build(cfg) if 'runner_type' in cfg else \
        Runner.from_cfg(cfg)
