"""Refuse at once to run a model on CUDA where mmcv's CUDA ops cannot run.

mmcv compiles its CUDA kernels (RoIAlign, NMS, ...) only where torch sees a
GPU at build time or where asked (FORCE_CUDA=1), for the architectures it
finds or is given, and pip caches the wheel it built. An install on a CPU
login node therefore gives the GPU nodes an mmcv whose ops have CPU kernels
only; one on a node with other GPUs (or another CUDA) an mmcv whose kernels
these GPUs cannot load ("no kernel image is available").
Without this check a detector trains its first iterations on the GPU and
then fails deep inside RoIAlign.
"""
from typing import Callable, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...registry import HOOKS

MMCV_CUDA_FIX = (
    'rebuild mmcv 2.1.0 with its CUDA ops on a machine with the CUDA toolkit '
    '(nvcc) of your torch: pip uninstall -y mmcv && pip cache remove mmcv && '
    'MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="<your GPUs\' compute '
    'capabilities, e.g. 8.0;9.0>" pip install --no-build-isolation '
    'mmcv==2.1.0 (pelk_mm\'s installer does this on a GPU node with nvcc, or '
    'where TORCH_CUDA_ARCH_LIST or PELK_MM_MMCV_CUDA=1 ask)')


def mmcv_cuda_version() -> str:
    """The CUDA version mmcv's ops were compiled with, or
    ``'not available'`` (mmcv's answer for a CPU-only build)."""
    from mmcv.ops import get_compiling_cuda_version
    return get_compiling_cuda_version()


def run_mmcv_ops(device: torch.device) -> None:
    """Run mmcv's ``nms`` and ``roi_align`` once, on one box, on
    ``device``; raise what they raise (a missing kernel image, say)."""
    from mmcv.ops import nms, roi_align
    boxes = torch.tensor([[0., 0., 4., 4.]], device=device)
    _, kept = nms(boxes, torch.ones(1, device=device), 0.5)
    feature = torch.ones(1, 1, 8, 8, device=device)
    rois = torch.tensor([[0., 0., 0., 4., 4.]], device=device)
    pooled = roi_align(feature, rois, (2, 2), 1.0, 0, 'avg', True)
    if kept.numel() != 1 or not torch.allclose(pooled, feature[..., :2, :2]):
        raise RuntimeError(f'nms kept {kept.numel()} of 1 box and '
                           f'roi_align of ones gave {pooled.flatten()}')


def _capability(device: torch.device) -> str:
    try:
        return '{}.{}'.format(*torch.cuda.get_device_capability(device))
    except (RuntimeError, AssertionError, ValueError):
        return '<unknown>'


def check_mmcv_ops(
        device: torch.device,
        compiled_cuda: Optional[str] = None,
        run_ops: Callable[[torch.device], None] = run_mmcv_ops) -> None:
    """Raise if a model on ``device`` needs CUDA ops that mmcv lacks or
    cannot run there.

    Args:
        device (torch.device): Where the model runs.
        compiled_cuda (str, optional): mmcv's compiling CUDA version;
            defaults to asking mmcv (:func:`mmcv_cuda_version`).
        run_ops (callable): Runs the ops on a device, raising where they
            fail. Defaults to :func:`run_mmcv_ops`.

    Raises:
        RuntimeError: Naming the problem and the fix.
    """
    if torch.device(device).type != 'cuda':
        return
    if compiled_cuda is None:
        compiled_cuda = mmcv_cuda_version()
    if compiled_cuda == 'not available':
        raise RuntimeError(
            f'the model runs on {device}, but mmcv\'s compiled ops (RoIAlign, '
            f'NMS, ...) were built without CUDA, so they would fail on the '
            f'first GPU batch; {MMCV_CUDA_FIX}')
    try:
        run_ops(torch.device(device))
    except RuntimeError as err:
        capability = _capability(device)
        raise RuntimeError(
            f'mmcv\'s CUDA ops fail on {device} (compute capability '
            f'{capability}): {str(err).strip()[:300]}. mmcv was compiled '
            f'with CUDA {compiled_cuda} (torch has CUDA {torch.version.cuda})'
            f', probably for other GPUs: build it for these '
            f'(TORCH_CUDA_ARCH_LIST="{capability}"); '
            f'{MMCV_CUDA_FIX}') from err


@HOOKS.register_module()
class MMCVOpsCheckHook(Hook):
    """Check, before training or testing starts, that mmcv's CUDA ops run
    on the model's device if it is a GPU (:func:`check_mmcv_ops`). The
    detection configs, whose RoI heads need mmcv's ops, set it in
    ``default_hooks``."""
    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = runner.model
        model = model.module if is_model_wrapper(model) else model
        param = next(model.parameters(), None)
        if param is not None:
            check_mmcv_ops(param.device)
