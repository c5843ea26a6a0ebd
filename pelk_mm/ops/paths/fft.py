"""``'fft'``: an FFT convolution, whose cost barely grows with K."""
import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from .base import DenseKernelPath, Request


@lru_cache(maxsize=None)
def fft_size(n: int) -> int:
    """Smallest 2-, 3-, 5- or 7-smooth integer >= n (fast FFT lengths)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def fft_shape(height: int, width: int, kernel_size: int) -> tuple:
    """The padded (Nh, Nw) of an H x W map: ``N >= H + K // 2`` keeps the
    circular wrap-around out of the kept window."""
    pad = kernel_size // 2
    return (fft_size(max(height + pad, kernel_size)),
            fft_size(max(width + pad, kernel_size)))


def depthwise_conv_fft(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise "same" cross-correlation computed with real FFTs.

    Equal to :func:`~pelk_mm.ops.depthwise_conv_direct` up to rounding.
    The planes are zero-padded to :func:`fft_shape` and the kernel is
    stored centred at the origin, so that the product of spectra is the
    correlation. Half-precision inputs are computed in float32 and cast
    back (pocketfft has no half kernels; cuFFT only for powers of two).

    Args:
        x (Tensor): Input of shape (B, C, H, W).
        kernel (Tensor): Depthwise kernel of shape (C, K, K), K odd.

    Returns:
        Tensor: Output of shape (B, C, H, W), dtype of ``x``.
    """
    height, width = x.shape[-2:]
    size = kernel.shape[-1]
    pad = size // 2
    nh, nw = fft_shape(height, width, size)
    compute_dtype = torch.promote_types(x.dtype, torch.float32)
    x_f = torch.fft.rfft2(x.to(compute_dtype), s=(nh, nw))
    centred = F.pad(kernel.to(compute_dtype), (0, nw - size, 0, nh - size))
    centred = centred.roll(shifts=(-pad, -pad), dims=(-2, -1))
    k_f = torch.fft.rfft2(centred)
    y = torch.fft.irfft2(x_f * k_f.conj(), s=(nh, nw))
    return y[..., :height, :width].to(x.dtype)


class FFTPath(DenseKernelPath):
    name = 'fft'
    summary = 'an FFT convolution whose cost barely grows with K'
    # The TorchScript-based ONNX exporter has no rfft2 (the dynamo one
    # writes ONNX's DFT).
    torchscript_onnx = False
    costs = {
        # One N log2 N unit, measured as for 'direct' (2-core x86 CPU).
        'cpu': 1.12,
        # NOT MEASURED: cuFFT's cost is dominated by memory traffic and
        # kernel launches (several per call), so a unit is priced higher.
        'cuda': 4.0,
    }

    def work(self, request: Request) -> float:
        nh, nw = fft_shape(request.height, request.width, request.kernel_size)
        return nh * nw * math.log2(nh * nw)

    def run_dense(self, x, kernel):
        return depthwise_conv_fft(x, kernel)
