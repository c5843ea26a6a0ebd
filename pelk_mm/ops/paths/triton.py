"""``'triton'``: the summed-area tables as two single-pass Triton kernels
(CUDA; the CPU under ``TRITON_INTERPRET=1``, which is how the tests run
them without a GPU), registered as torch custom ops so that
``torch.compile`` and ``torch.export`` keep them. The kernels are
:mod:`.triton_kernels`, imported on first use (so that importing pelk_mm
imports no triton, and ``TRITON_INTERPRET`` may be set until then)."""
from typing import Optional

import torch

from .. import switches
from . import triton_env
from .base import Refusal, Request, SummedAreaPath


class TritonPath(SummedAreaPath):
    name = 'triton'
    summary = 'summed-area tables as Triton kernels (CUDA)'
    traceable = False
    custom_op = True
    stand_in = 'box_sums'
    stand_in_for = frozenset({'traced'})
    # Not yet met every GPU: the first use per process and variant is
    # checked against the FFT path, which runs where the check fails.
    checked_against = 'fft'
    # Float32 accumulation whatever the input (float64 included).
    tolerance = {
        torch.float64: 1e-5,
        torch.float32: 1e-4,
        torch.bfloat16: 1e-2,
        torch.float16: 1e-2,
    }
    costs = {
        # NOT MEASURED (reasoned): single-pass kernels that read the input
        # and write the output once, (k' + 1)^2 multiply-adds and gathers
        # per pixel on chip; one of their operations is priced as one
        # direct multiply-add, so that they win on the small maps of late
        # stages and FFT keeps the large early ones until measured
        # (tools/gpu/check.py prints the measured constant).
        'cuda': 1.0,
    }

    def unavailable(self, request: Request) -> Optional[Refusal]:
        why = triton_env.unavailable_on(request.device_type)
        return None if why is None else Refusal(*why)

    def emulated(self, request: Request) -> bool:
        return request.device_type != 'cuda'

    def ready(self, request: Request) -> bool:
        return switches.triton_allowed()

    def run(self, x, weight, grid, kernel_size):
        return self.run_fused(x, weight, grid, kernel_size)

    def run_fused(self, x, weight, grid, kernel_size, addend=None, out=None):
        # The addend is added and the output written by the kernel's last
        # step (one rounding, no second pass over the map).
        from .triton_kernels import grid_depthwise_conv_triton
        return grid_depthwise_conv_triton(x, weight, grid, kernel_size, addend,
                                          out)

    def check_key(self, x, weight, kernel_size, addend=None):
        # Each block size (they follow W, K and k') is a kernel compiled
        # on first use, which the check must see before it runs.
        from .triton_kernels import block_sizes
        return super().check_key(x, weight, kernel_size, addend) + \
            block_sizes(x.shape[-1], kernel_size, weight.shape[-1])
