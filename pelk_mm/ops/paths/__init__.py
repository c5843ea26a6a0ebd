"""The paths of the peripheral conv: a registry and its dispatcher.

Each module here is one implementation, declaring what it supports, its
cost per device type and its tolerance (:class:`~.base.ConvPath`):

=============  ==========================================================
``direct``     the dense depthwise conv (fast for small K or tiny maps)
``fft``        an FFT convolution whose cost barely grows with K
``box_sums``   summed-area tables in standard ops (traceable)
``sat``        summed-area tables, fused C++/OpenMP (CPU), registered as
               torch custom ops (``torch.compile`` and ``torch.export``
               keep them); where it cannot run (off the CPU, ONNX export,
               ``torch.jit.trace``), ``box_sums`` stands in
``triton``     summed-area tables as Triton kernels (CUDA), checked on
               first use against ``fft``; ``box_sums`` in traced graphs
=============  ==========================================================

``path='auto'`` takes the cheapest path that can serve the conv (or the
one ``PELK_MM_PATH`` names, :mod:`pelk_mm.ops.switches`); a named path runs
where it can, its stand-in where that covers the reason it cannot, and is
otherwise refused with the reason. Why each path refused a conv is logged
at debug level (logger ``pelk_mm.ops.paths``).

Adding a path: a module with its :class:`~.base.ConvPath` subclass, one
line in :data:`REGISTRY`, and its tests (the test suite parametrizes over
the registry).
"""
from .base import (CUSTOM_OPS_TRACER, STANDARD_OPS_TRACER,
                   TORCHSCRIPT_ONNX_TRACER, TRACERS, ConvPath, Refusal,
                   Request, as_tracer, relative_error, tracer, tracing)
from .dispatch import (PathRefused, choose, choose_path, costs, make_request,
                       refusals, request_for, resolve, run)
from .registry import PATHS, REGISTRY, get

__all__ = [
    'REGISTRY', 'PATHS', 'TRACERS', 'CUSTOM_OPS_TRACER', 'STANDARD_OPS_TRACER',
    'TORCHSCRIPT_ONNX_TRACER', 'ConvPath', 'PathRefused', 'Refusal', 'Request',
    'as_tracer', 'tracer', 'choose', 'choose_path', 'costs', 'get',
    'make_request', 'refusals', 'relative_error', 'request_for', 'resolve',
    'run', 'tracing'
]
