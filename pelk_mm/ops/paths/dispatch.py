"""The dispatcher of the peripheral conv's paths: what ``path='auto'``
chooses, what a named path resolves to, and the call that runs one (see
:mod:`pelk_mm.ops.paths`)."""
import logging
from typing import Dict, Optional

import torch

from .. import switches
from .base import Refusal, Request, as_tracer, tracer
from .first_use import run_checked
from .registry import PATHS, REGISTRY, get

logger = logging.getLogger(__name__)


class PathRefused(ValueError, RuntimeError):
    """A path that was named (``path=``, ``PELK_MM_PATH``) cannot run the
    conv it was given; the message says why and what can."""


def request_for(kernel_size: int,
                height,
                width,
                requires_grad: bool = False,
                num_cells: Optional[int] = None,
                device_type: str = 'cpu',
                dtype: torch.dtype = torch.float32,
                traced=None) -> Request:
    """The :class:`Request` of one conv (the arguments as in
    :func:`choose_path`; ``height`` and ``width`` may be symbolic)."""
    return Request(kernel_size, height, width, requires_grad, num_cells,
                   device_type, dtype,
                   tracer() if traced is None else as_tracer(traced))


def make_request(x: torch.Tensor,
                 weight: torch.Tensor,
                 grid: Optional[torch.Tensor],
                 kernel_size: int,
                 traced=None) -> Request:
    """The :class:`Request` of convolving ``x`` with ``weight`` (block
    weights on ``grid``, or a dense kernel where ``grid`` is None);
    ``traced`` as in :func:`choose_path`."""
    return request_for(
        kernel_size,
        # As they are: symbolic in a dynamic-shape export, where a named
        # path must not fix them (only pricing reads them, see costs()).
        x.shape[-2],
        x.shape[-1],
        # Priced for inference under torch.jit.trace, whose check traces
        # again without grad and must record the same paths.
        requires_grad=torch.is_grad_enabled() and not torch.jit.is_tracing()
        and (x.requires_grad or weight.requires_grad),
        num_cells=None if grid is None else grid.shape[0],
        device_type=x.device.type,
        dtype=x.dtype,
        traced=traced)


def refusals(request: Request) -> Dict[str, Optional[Refusal]]:
    """For every path, why it cannot serve ``request`` (None: it can)."""
    return {name: path.refusal(request) for name, path in REGISTRY.items()}


def costs(request: Request) -> Dict[str, float]:
    """The cost of every path ``auto`` may choose for ``request``."""
    # The TorchScript tracer hands sizes over as 0-d tensors (and a
    # dynamic export as symbols): the choice is made once, for the traced
    # size.
    request = request._replace(
        height=int(request.height), width=int(request.width))
    offered = {}
    for name, path in REGISTRY.items():
        if path.refusal(request) is None and path.ready(request):
            cost = path.cost(request)
            if cost is not None:
                offered[name] = cost
    return offered


def resolve(name: str, request: Request, named_by: str = 'path') -> str:
    """The path that runs ``request`` for the name asked: that path, or
    its stand-in where the stand-in covers the reason it cannot.

    Raises:
        PathRefused: Where neither can, saying why and what can.
    """
    path = get(name)
    refusal = path.refusal(request)
    if refusal is None:
        return name
    if path.stand_in and refusal.kind in path.stand_in_for:
        return resolve(path.stand_in, request, named_by)
    can = [n for n, r in refusals(request).items() if r is None]
    asked = f'{named_by}={name!r}' if named_by == 'path' else \
        f'{named_by}={name}'
    raise PathRefused(f'{asked} cannot run here: {refusal.reason}; paths '
                      f'that can: {", ".join(can)}')


def choose(request: Request) -> str:
    """The path ``'auto'`` takes for ``request``: the one the switches
    force, or the cheapest that can serve it now."""
    forced = switches.get_forced_path()
    if forced != 'auto':
        if forced not in REGISTRY:
            raise ValueError(f'PELK_MM_PATH must be one of {PATHS}, got '
                             f'{forced!r}')
        return resolve(forced, request, 'PELK_MM_PATH')
    offered = costs(request)
    choice = min(offered, key=lambda name: offered[name])
    # (Not from traced graphs: logging is a graph break to dynamo.)
    if not request.traced and logger.isEnabledFor(logging.DEBUG):
        logger.debug('auto chose %r for %s; costs %s; refused: %s', choice,
                     request, {
                         n: f'{c:.3g}'
                         for n, c in offered.items()
                     }, {
                         n: r.reason
                         for n, r in refusals(request).items() if r is not None
                     })
    return choice


def choose_path(kernel_size: int,
                height: int,
                width: int,
                requires_grad: bool = False,
                num_cells: Optional[int] = None,
                device: Optional[torch.device] = None,
                traced=None,
                dtype: torch.dtype = torch.float32) -> str:
    """The path ``'auto'`` takes for one feature map (see :func:`choose`).

    Args:
        kernel_size (int): Kernel size K.
        height (int): Map height H.
        width (int): Map width W.
        requires_grad (bool): Whether a backward pass will follow.
        num_cells (int, optional): k', the cells of the sharing grid (None:
            a dense kernel, which the summed-area paths cannot take).
        device (torch.device, optional): Where the map lives (CPU if None).
        traced (bool | str, optional): Whether the graph is traced, and by
            what: False (eager), ``'compile'`` (``torch.compile``,
            ``torch.export``: custom ops kept), ``'standard'`` or True (ONNX
            export, ``torch.jit.trace``: standard ops only),
            ``'torchscript-onnx'`` (the TorchScript-based ONNX exporter:
            standard ops with an ONNX form there, no FFT). By default asked
            of torch, whoever calls the tracer.
        dtype (torch.dtype): The map's dtype. Defaults to float32.

    Returns:
        str: A name of :data:`REGISTRY`.

    Raises:
        ValueError: If ``PELK_MM_PATH`` names no path, or one that cannot
            run here.
    """
    device_type = 'cpu' if device is None else torch.device(device).type
    return choose(
        request_for(kernel_size, int(height), int(width), requires_grad,
                    num_cells, device_type, dtype, traced))


def run(name: str,
        x: torch.Tensor,
        weight: torch.Tensor,
        grid: Optional[torch.Tensor],
        kernel_size: int,
        traced=None,
        addend: Optional[torch.Tensor] = None,
        out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The conv of ``x`` through the path ``name`` (or ``'auto'``).

    Args:
        name (str): ``'auto'`` or a name of :data:`REGISTRY`.
        x (Tensor): Input (B, C, H, W).
        weight (Tensor): Block weights (C, k', k') with ``grid``, else the
            dense kernel (C, K, K).
        grid (Tensor, optional): int64 cell widths (k', ).
        kernel_size (int): K.
        traced (bool | str, optional): As in :func:`choose_path`.
        addend (Tensor, optional): Added to the output, broadcast to
            (C, H, W) (a positional term, a bias); a path may fuse it into
            its kernels (:meth:`ConvPath.run_fused`).
        out (Tensor, optional): Where to write the output, (B, C, H, W) of
            any strides (a channel slice of a larger map).

    Returns:
        Tensor: (B, C, H, W), dtype of ``x`` (``out`` where given).
    """
    if x.shape[0] == 0 or x.shape[-1] == 0 or x.shape[-2] == 0:
        # Nothing to convolve (FFT and the summed-area reshapes refuse
        # empty maps): the empty output of x's shape, in the autograd graph
        # of x, the weights and the addend (their gradients: zeros).
        empty = x * 0 + weight.sum() * 0
        if addend is not None:
            empty = empty + addend * 0
        return empty if out is None else out.copy_(empty)
    request = make_request(x, weight, grid, kernel_size, traced)
    chosen = choose(request) if name == 'auto' else resolve(name, request)
    path = REGISTRY[chosen]
    if path.checked_against and not request.traced:
        trusted = REGISTRY[path.checked_against]

        def fallback(x, weight):
            return trusted.run(x, weight, grid, kernel_size)

        return run_checked(path, x, weight, grid, kernel_size, fallback,
                           addend, out)
    return path.run_fused(x, weight, grid, kernel_size, addend, out)
