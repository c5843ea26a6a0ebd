"""Refuse at once to run a model on CUDA with an mmcv built without CUDA ops.

mmcv compiles its CUDA kernels (RoIAlign, NMS, ...) only where torch sees a
GPU at build time or where asked (FORCE_CUDA=1), and pip caches the wheel it
built; an install on a CPU login node therefore gives the GPU nodes an mmcv
whose ops have CPU kernels only.
Without this check a detector trains its first iterations on the GPU and
then fails deep inside RoIAlign.
"""
from typing import Optional

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


def check_mmcv_ops(device: torch.device,
                   compiled_cuda: Optional[str] = None) -> None:
    """Raise if a model on ``device`` needs CUDA ops that mmcv lacks.

    Args:
        device (torch.device): Where the model runs.
        compiled_cuda (str, optional): mmcv's compiling CUDA version;
            defaults to asking mmcv (:func:`mmcv_cuda_version`).

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


@HOOKS.register_module()
class MMCVOpsCheckHook(Hook):
    """Check, before training or testing starts, that mmcv has CUDA ops if
    the model runs on CUDA (:func:`check_mmcv_ops`). The detection configs,
    whose RoI heads need mmcv's ops, set it in ``default_hooks``."""
    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = runner.model
        model = model.module if is_model_wrapper(model) else model
        param = next(model.parameters(), None)
        if param is not None:
            check_mmcv_ops(param.device)
