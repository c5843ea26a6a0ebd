"""The fused summed-area-table path of the peripheral conv (C++/OpenMP).

``csrc/peripheral_sat.cpp`` computes the depthwise conv of a kernel that is
constant on grid blocks in about k'^2 + 4k' operations per pixel (k' = 13 at
K = 51) instead of K^2, forward and backward (see the file for the method).
It is compiled with ``torch.utils.cpp_extension.load`` on first use (about a
minute; ``make install`` does it once) and cached under
``$PELK_MM_EXT_DIR`` (default ``~/.cache/pelk_mm/extensions``). Where it
cannot be built (no compiler), :func:`available` is False, ``path='auto'``
uses the FFT or dense paths, and ``path='sat'`` raises an error that says
why. It runs on the CPU in float32 and float64; half-precision inputs are
computed in float32 and cast back.
"""
import logging
import os
import os.path as osp
import threading
from typing import Optional

import torch

_SOURCE = osp.join(osp.dirname(__file__), 'csrc', 'peripheral_sat.cpp')
_lock = threading.Lock()
_module = None
_error: Optional[str] = None


def build_directory() -> str:
    root = os.environ.get('PELK_MM_EXT_DIR') or osp.join(
        osp.expanduser('~'), '.cache', 'pelk_mm', 'extensions')
    # One build per torch version: the ABI changes between them.
    path = osp.join(root, f'torch{torch.__version__.replace("+", "_")}')
    os.makedirs(path, exist_ok=True)
    return path


def load(verbose: bool = False):
    """The compiled extension module, building it the first time.

    Raises:
        RuntimeError: If it cannot be built, with the compiler's reason.
    """
    global _module, _error
    with _lock:
        if _module is not None:
            return _module
        if _error is not None:
            raise RuntimeError(_error)
        try:
            # Importing cpp_extension warns that no CUDA runtime is found on
            # CPU machines; this extension needs none.
            logger = logging.getLogger('torch.utils.cpp_extension')
            level = logger.level
            logger.setLevel(logging.ERROR)
            try:
                from torch.utils.cpp_extension import load as load_extension
            finally:
                logger.setLevel(level)
            _module = load_extension(
                name='pelk_peripheral_sat', sources=[_SOURCE],
                extra_cflags=['-O3', '-march=native', '-fopenmp'],
                extra_ldflags=['-fopenmp'],
                build_directory=build_directory(), verbose=verbose)
        except Exception as error:  # compiler missing, build failed, ...
            _error = (
                f'the summed-area-table extension of pelk_mm could not be '
                f'built ({type(error).__name__}: {str(error)[-800:]}). It '
                f'needs a C++ compiler with OpenMP (g++) and ninja; install '
                f'them, or use path="fft" / "direct" (path="auto" falls back '
                f'on its own)')
            raise RuntimeError(_error) from error
        return _module


def available() -> bool:
    """Whether the extension is (or can be) built; builds it if needed."""
    try:
        load()
        return True
    except RuntimeError:
        return False


class _PeripheralSAT(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, grid):
        ctx.save_for_backward(x, weight, grid)
        return load().forward(x, weight, grid)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, grid = ctx.saved_tensors
        grad_x, grad_w = load().backward(grad_out, x, weight, grid,
                                         ctx.needs_input_grad[0],
                                         ctx.needs_input_grad[1])
        return (grad_x if ctx.needs_input_grad[0] else None,
                grad_w if ctx.needs_input_grad[1] else None, None)


def grid_depthwise_conv_sat(x: torch.Tensor, weight: torch.Tensor,
                            grid: torch.Tensor) -> torch.Tensor:
    """Depthwise "same" conv of a block-constant kernel (fused, CPU).

    Args:
        x (Tensor): Input (B, C, H, W), on the CPU.
        weight (Tensor): Block weights (C, k', k').
        grid (Tensor): int64 cell widths (k',), summing to the odd K.

    Returns:
        Tensor: (B, C, H, W), equal to the dense conv of the expanded kernel.
    """
    compute_dtype = torch.promote_types(x.dtype, torch.float32)
    out = _PeripheralSAT.apply(
        x.to(compute_dtype), weight.to(compute_dtype), grid.cpu())
    return out.to(x.dtype)
