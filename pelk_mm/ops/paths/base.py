"""What a path of the peripheral conv declares, and what it is asked.

A *path* is one implementation of the depthwise "same" cross-correlation
of :mod:`pelk_mm.ops.functional`, either of a dense kernel (C, K, K) or of
block weights (C, k', k') on a sharing grid. Each declares what it supports
(the :class:`Request` it can serve), its cost per device type, and its
tolerance; the dispatcher (:mod:`pelk_mm.ops.paths`) does the rest.
"""
from typing import Any, Dict, FrozenSet, NamedTuple, Optional, Tuple

import torch

from ..grid import expand_by_grid
from ..torch_features import is_compiling

#: Every floating dtype a path may be handed.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: The tracer of an ONNX export or ``torch.jit.trace``: the graph may hold
#: standard ops only.
STANDARD_OPS_TRACER = 'standard'
#: The TorchScript-based ONNX exporter (``torch.onnx.export`` with
#: ``dynamo=False``, and every export before torch 2.5): standard ops that
#: have an ONNX symbolic there (no FFT).
TORCHSCRIPT_ONNX_TRACER = 'torchscript-onnx'
#: The tracer of ``torch.compile`` and ``torch.export`` (dynamo): the graph
#: may also hold the ops registered with ``torch.library``.
CUSTOM_OPS_TRACER = 'compile'
TRACERS = (STANDARD_OPS_TRACER, TORCHSCRIPT_ONNX_TRACER, CUSTOM_OPS_TRACER)


def tracer() -> Optional[str]:
    """Which kind of tracer is tracing the graph, whoever called it:
    :data:`TORCHSCRIPT_ONNX_TRACER` (the TorchScript-based ONNX exporter),
    :data:`STANDARD_OPS_TRACER` (the dynamo-based ONNX exporter, the
    TorchScript tracer), :data:`CUSTOM_OPS_TRACER` (``torch.compile``,
    ``torch.export``), or None (eager)."""
    onnx = torch.onnx.is_in_onnx_export()
    if onnx and torch.jit.is_tracing():
        return TORCHSCRIPT_ONNX_TRACER
    if onnx or torch.jit.is_tracing():
        return STANDARD_OPS_TRACER
    if is_compiling():
        return CUSTOM_OPS_TRACER
    return None


def tracing() -> bool:
    """Whether the graph is being traced (``torch.compile``,
    ``torch.export``, the TorchScript tracer and ONNX exporter)."""
    return tracer() is not None


def as_tracer(traced) -> Optional[str]:
    """A ``traced`` argument as a tracer kind: None or False (eager), a
    name of :data:`TRACERS`, or True (a tracer of standard ops only, the
    strictest)."""
    if traced is None or traced is False:
        return None
    if traced is True:
        return STANDARD_OPS_TRACER
    if traced not in TRACERS:
        raise ValueError(f'traced must be a bool or one of {TRACERS}, got '
                         f'{traced!r}')
    return traced


class Request(NamedTuple):
    """One conv to run: what a path is asked whether it can serve.

    Attributes:
        kernel_size (int): K.
        height (int): Map height H.
        width (int): Map width W.
        requires_grad (bool): Whether a backward pass will follow.
        num_cells (int, optional): k', where the kernel is given as block
            weights on a grid; None for a dense kernel.
        device_type (str): ``'cpu'``, ``'cuda'``, ...
        dtype (torch.dtype): The input's dtype.
        tracer (str, optional): The kind of tracer tracing the graph (see
            :func:`tracer`); None in eager mode.
    """
    kernel_size: int
    height: int
    width: int
    requires_grad: bool = False
    num_cells: Optional[int] = None
    device_type: str = 'cpu'
    dtype: torch.dtype = torch.float32
    tracer: Optional[str] = None

    @property
    def traced(self) -> bool:
        """Whether the graph is being traced."""
        return self.tracer is not None

    @property
    def box_ops(self) -> float:
        """``(k'^2 + 4k') H W``: the operations of the summed-area-table
        algorithm on one plane."""
        cells = self.num_cells
        if cells is None:
            raise ValueError('box_ops needs num_cells (a grid)')
        return (cells * cells + 4 * cells) * self.height * self.width


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The measure of :attr:`ConvPath.tolerance`: the largest absolute
    difference over the largest absolute expected value, in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return ((actual - expected).abs().max() /
            expected.abs().max().clamp_min(1e-12)).item()


class Refusal(NamedTuple):
    """Why a path cannot serve a request: ``kind`` (``'grid'``,
    ``'device'``, ``'dtype'``, ``'traced'`` or ``'unavailable'``) and the
    reason, for people."""
    kind: str
    reason: str


def add_and_write(result: torch.Tensor, addend: Optional[torch.Tensor],
                  out: Optional[torch.Tensor]) -> torch.Tensor:
    """``result + addend`` (in the dtype of ``result``; no addend: the
    result), written into ``out`` where given."""
    if addend is not None:
        addend = addend.to(result.dtype)
        if out is None:
            return result + addend
        if not (torch.is_grad_enabled() and
                (result.requires_grad or addend.requires_grad)):
            return torch.add(result, addend, out=out)  # one pass
        result = result + addend  # (out= takes no autograd)
    return result if out is None else out.copy_(result)


class ConvPath:
    """One implementation of the (grid) depthwise conv.

    Subclasses set the class attributes and implement :meth:`run` (and
    :meth:`work`, their cost formula); :meth:`unavailable` adds checks
    beyond the declared ones.

    Attributes:
        name (str): What ``path=`` and ``PELK_MM_PATH`` call it.
        summary (str): One line, for docs and errors.
        needs_grid (bool): Works from block weights on a grid only.
        devices (tuple[str], optional): Device types it runs on (None: any).
        dtypes (tuple[torch.dtype]): Input dtypes it takes.
        traceable (bool): Only standard ops (may run in any traced graph).
        torchscript_onnx (bool): Its ops have ONNX symbolics in the
            TorchScript-based exporter (where traceable).
        custom_op (bool): Registered with ``torch.library`` (with fake
            kernels and autograd): ``torch.compile`` and ``torch.export``
            keep it, ONNX export and the TorchScript tracer cannot.
        stand_in (str, optional): The path that computes the same in its
            place where it refuses for one of ``stand_in_for``.
        stand_in_for (frozenset[str]): Refusal kinds the stand-in covers.
        checked_against (str, optional): The path its first use per
            process and variant is checked against (a path that has not
            met every machine it may run on; on failure that path runs).
        costs (dict): Per device type (``'cpu'`` for the others), the
            time of one unit of :meth:`work`, in multiply-adds of the
            direct conv at large K (``tools/benchmark/fit_path_costs.py``
            fits it); None where ``auto`` does not offer the path.
        tolerance (dict): Largest :func:`relative_error` of its output
            and gradients against a float64 reference, per input dtype.
    """
    name: str = ''
    summary: str = ''
    needs_grid: bool = False
    devices: Optional[Tuple[str, ...]] = None
    dtypes: Tuple[torch.dtype, ...] = FLOAT_DTYPES
    traceable: bool = True
    torchscript_onnx: bool = True
    custom_op: bool = False
    stand_in: Optional[str] = None
    stand_in_for: FrozenSet[str] = frozenset()
    checked_against: Optional[str] = None
    costs: Dict[str, Any] = {}
    tolerance: Dict[torch.dtype, float] = {
        torch.float64: 1e-10,
        torch.float32: 1e-4,
        torch.bfloat16: 1e-2,
        torch.float16: 2e-3,
    }

    def refusal(self, request: Request) -> Optional[Refusal]:
        """Why this path cannot serve ``request``, or None."""
        if self.needs_grid and request.num_cells is None:
            return Refusal(
                'grid', f"the '{self.name}' path works from the block "
                f'weights on a grid, which a dense kernel has not: call '
                f'grid_depthwise_conv (or peripheral_conv2d with grid=...), '
                f'or choose direct/fft')
        if self.devices is not None and \
                request.device_type not in self.devices:
            return Refusal(
                'device', f"the '{self.name}' path runs on "
                f'{"/".join(self.devices)} tensors, this map is on '
                f'{request.device_type}')
        if request.dtype not in self.dtypes:
            return Refusal(
                'dtype', f"the '{self.name}' path takes "
                f'{", ".join(str(d) for d in self.dtypes)}, not '
                f'{request.dtype}')
        if request.traced and not self.traceable and not (
                self.custom_op and request.tracer == CUSTOM_OPS_TRACER):
            kept_by = ('ONNX export and the TorchScript tracer'
                       if self.custom_op else
                       'tracers (torch.compile, torch.export, ONNX export)')
            return Refusal('traced',
                           f"the '{self.name}' path is opaque to {kept_by}")
        if request.tracer == TORCHSCRIPT_ONNX_TRACER and \
                not self.torchscript_onnx:
            return Refusal(
                'traced', f"the '{self.name}' path's ops have no ONNX form "
                "in torch's TorchScript-based exporter (export with "
                "dynamo=True, torch >= 2.5, for them)")
        return self.unavailable(request)

    def unavailable(self, request: Request) -> Optional[Refusal]:
        """Checks beyond the declarations (a library, an extension);
        never expensive."""
        return None

    def ready(self, request: Request) -> bool:
        """Whether ``auto`` may choose it now without setting anything up
        first (compiling an extension, say). Defaults to True."""
        return True

    def emulated(self, request: Request) -> bool:
        """Whether it would run through an emulator for ``request`` (slow:
        for checking the path where its hardware is not, not for use)."""
        return False

    def unit(self, device_type: str) -> Optional[float]:
        """The constant of :meth:`cost` on ``device_type`` (the CPU's for
        device types without their own)."""
        return self.costs.get(device_type, self.costs.get('cpu'))

    def work(self, request: Request) -> Optional[float]:
        """The cost formula of ``request`` with a unit constant of 1 (what
        the path's time grows with); None where it has none."""
        return None

    def cost(self, request: Request) -> Optional[float]:
        """Cost of ``request``, in multiply-adds of the direct conv:
        :meth:`unit` times :meth:`work`; None where ``auto`` does not offer
        this path."""
        unit = self.unit(request.device_type)
        if unit is None:
            return None
        work = self.work(request)
        return None if work is None else unit * work

    def run(self, x: torch.Tensor, weight: torch.Tensor,
            grid: Optional[torch.Tensor], kernel_size: int) -> torch.Tensor:
        """The conv of ``x`` (B, C, H, W): with ``grid``, of block weights
        ``weight`` (C, k', k'); without, of the dense kernel (C, K, K).
        Returns (B, C, H, W) in the dtype of ``x``."""
        raise NotImplementedError

    def run_fused(self,
                  x: torch.Tensor,
                  weight: torch.Tensor,
                  grid: Optional[torch.Tensor],
                  kernel_size: int,
                  addend: Optional[torch.Tensor] = None,
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:meth:`run`, plus ``addend`` (broadcast to (C, H, W): a
        positional term, a bias), written into ``out`` where given (a
        channel slice of a larger map). By default the addition and the
        write follow the conv (:func:`add_and_write`); a path may fuse
        them into its kernels."""
        return add_and_write(
            self.run(x, weight, grid, kernel_size), addend, out)

    def check_key(self,
                  x: torch.Tensor,
                  weight: torch.Tensor,
                  kernel_size: int,
                  addend: Optional[torch.Tensor] = None) -> tuple:
        """What a first-use check is valid for (see ``checked_against``):
        the compiled variant that will run. By default the device, dtype,
        K, whether the map is smaller than K, and the addend's shape (none,
        a bias, a term per pixel)."""
        return (str(x.device), x.dtype, kernel_size, x.shape[-2]
                < kernel_size, x.shape[-1] < kernel_size,
                None if addend is None else tuple(addend.shape[-2:]) == (1, 1))

    def __repr__(self) -> str:
        return f'<conv path {self.name!r}: {self.summary}>'


class DenseKernelPath(ConvPath):
    """A path that convolves the dense (C, K, K) kernel: block weights are
    expanded first, in float32 or better (the gradient of a block weight
    sums those of up to (K / 4)^2 taps, which half precision would round
    once per tap)."""

    def run(self, x, weight, grid, kernel_size):
        if grid is not None:
            dtype = torch.promote_types(weight.dtype, torch.float32)
            weight = expand_by_grid(weight.to(dtype), grid, kernel_size)
        return self.run_dense(x, weight)

    def run_dense(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SummedAreaPath(ConvPath):
    """A path that sums boxes of summed-area tables, from block weights on
    a grid: its work is :attr:`Request.box_ops`."""
    needs_grid = True

    def work(self, request: Request) -> Optional[float]:
        return request.box_ops
