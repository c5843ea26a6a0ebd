"""``'direct'``: the dense depthwise conv of the expanded kernel (torch's
own kernels: oneDNN on the CPU, cuDNN on CUDA)."""
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .base import DenseKernelPath, Request


def depthwise_conv_direct(x: torch.Tensor,
                          kernel: torch.Tensor) -> torch.Tensor:
    """Dense depthwise "same" conv.

    Args:
        x (Tensor): Input (B, C, H, W).
        kernel (Tensor): Depthwise kernel (C, K, K), K odd.

    Returns:
        Tensor: (B, C, H, W), dtype of ``x``.
    """
    return F.conv2d(
        x,
        kernel.unsqueeze(1).to(x.dtype),
        # int(): the TorchScript tracer of torch < 2.2 hands sizes as
        # tensors, which conv2d's padding does not take.
        padding=int(kernel.shape[-1]) // 2,
        groups=x.shape[1])


class FastKernels(NamedTuple):
    """Up to ``max_kernel`` the backend has a specialised inference
    kernel, ``speedup`` times faster per multiply-add (its backward is
    not)."""
    max_kernel: int
    speedup: float


class DirectPath(DenseKernelPath):
    name = 'direct'
    summary = 'the dense depthwise conv (fast for small K or tiny maps)'
    # The unit of every path's costs: one multiply-add of this path at
    # large K.
    costs = {'cpu': 1.0, 'cuda': 1.0}
    fast_kernels = {
        # Measured with tools/benchmark/peripheral_conv.py on a 2-core x86
        # CPU (torch 2.12; every CPU constant of the paths from its one run
        # at (2, 46, 128, 128), forward, fitted by fit_path_costs.py):
        # oneDNN has a specialised depthwise kernel up to K = 13, ~17x
        # faster per multiply-add.
        'cpu': FastKernels(13, 17.1),
        # NOT MEASURED: cuDNN's depthwise convs are efficient for small
        # kernels only (RepLKNet's finding).
        'cuda': FastKernels(13, 8.0),
    }

    def work(self, request: Request) -> float:
        fast = self.fast_kernels.get(request.device_type,
                                     self.fast_kernels['cpu'])
        macs = float(request.kernel_size**2 * request.height * request.width)
        if request.kernel_size <= fast.max_kernel and \
                not request.requires_grad:
            macs /= fast.speedup
        return macs

    def run_dense(self, x, kernel):
        return depthwise_conv_direct(x, kernel)
