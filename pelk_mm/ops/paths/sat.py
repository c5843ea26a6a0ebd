"""``'sat'``: the fused summed-area-table path of the peripheral conv
(C++/OpenMP, CPU).

``csrc/peripheral_sat.cpp`` computes the depthwise conv of a kernel that is
constant on grid blocks in about k'^2 + 4k' operations per pixel (k' = 13 at
K = 51) instead of K^2, forward and backward (see the file for the method);
:mod:`pelk_mm.ops.csrc.build` builds and loads it. ``path='auto'`` offers
this path only once it is built (choosing a path never compiles); where it
cannot be built (no compiler), ``path='sat'`` raises an error that says
why. It runs on the CPU in float32 and float64; half-precision inputs are
computed in float32 and cast back.

Its kernels are torch custom ops (``pelk_mm::sat_conv`` and
``pelk_mm::sat_conv_weight_grad``, with fake kernels and autograd), so
``torch.compile`` and ``torch.export`` keep them in their graphs (a program
exported with them runs where pelk_mm is imported); ONNX export and
``torch.jit.trace`` record the standard-op form (``box_sums``) instead.
"""
import torch

from ..csrc import build
from ..torch_features import has
from .base import Request, SummedAreaPath

# The extension's kernels. From torch 2.4 they are torch custom ops: a fake
# kernel (shapes only) lets dynamo trace them, so torch.compile and
# torch.export keep them in their graphs; autograd is registered for the
# conv. On an older torch the same functions and backward run eagerly
# through autograd.Functions, and graphs take 'box_sums' (custom_op below).


def _sat_conv(x: torch.Tensor, weight: torch.Tensor,
              grid: torch.Tensor) -> torch.Tensor:
    """The fused forward: x (B, C, H, W), block weights (C, k', k') of its
    dtype (float32 or float64), grid (k', ) int64 on the CPU ->
    (B, C, H, W), contiguous."""
    return build.load().forward(x, weight, grid)


def _sat_conv_weight_grad(grad_out: torch.Tensor, x: torch.Tensor,
                          weight: torch.Tensor,
                          grid: torch.Tensor) -> torch.Tensor:
    """The gradient of :func:`sat_conv` with respect to its block weights
    (C, k', k'), summed over the batch."""
    return build.load().weight_grad(grad_out, x, weight, grid)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _sat_conv_backward(ctx, grad_out):
    x, weight, grid = ctx.saved_tensors
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        # The adjoint: the same conv with the kernel flipped (block weights
        # and grid reversed); differentiable again, as the conv is.
        grad_x = sat_conv(grad_out, weight.flip((1, 2)), grid.flip(0))
    if ctx.needs_input_grad[1]:
        grad_w = sat_conv_weight_grad(grad_out, x, weight, grid)
    return grad_x, grad_w, None


def _no_second_derivative(ctx, grad):
    raise RuntimeError("the 'sat' path's gradient of the block weights is not "
                       'differentiable (a second derivative through it); use '
                       "path='fft' or 'direct' for that")


CUSTOM_OPS = has('custom_ops')
if CUSTOM_OPS:
    sat_conv = torch.library.custom_op(
        'pelk_mm::sat_conv', mutates_args=())(
            _sat_conv)
    sat_conv.register_fake(lambda x, weight, grid: x.new_empty(x.shape))
    sat_conv_weight_grad = torch.library.custom_op(
        'pelk_mm::sat_conv_weight_grad', mutates_args=())(
            _sat_conv_weight_grad)
    sat_conv_weight_grad.register_fake(
        lambda grad_out, x, weight, grid: weight.new_empty(weight.shape))
    torch.library.register_autograd(
        'pelk_mm::sat_conv', _sat_conv_backward, setup_context=_save_inputs)
    torch.library.register_autograd(
        'pelk_mm::sat_conv_weight_grad',
        _no_second_derivative,
        setup_context=lambda ctx, inputs, output: None)
else:

    class _SATConv(torch.autograd.Function):

        @staticmethod
        def forward(ctx, x, weight, grid):
            out = _sat_conv(x, weight, grid)
            _save_inputs(ctx, (x, weight, grid), out)
            return out

        backward = staticmethod(_sat_conv_backward)

    class _SATConvWeightGrad(torch.autograd.Function):

        @staticmethod
        def forward(ctx, grad_out, x, weight, grid):
            return _sat_conv_weight_grad(grad_out, x, weight, grid)

        backward = staticmethod(_no_second_derivative)

    sat_conv = _SATConv.apply
    sat_conv_weight_grad = _SATConvWeightGrad.apply

#: The extension's rows are padded to a multiple of this many columns
#: (``kTile`` of ``csrc/peripheral_sat.cpp``): the work of a map of width
#: W is that of one of width COLUMN_TILE * ceil(W / COLUMN_TILE).
COLUMN_TILE = 16


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
    out = sat_conv(x.to(compute_dtype), weight.to(compute_dtype), grid.cpu())
    return out.to(x.dtype)


class SatPath(SummedAreaPath):
    name = 'sat'
    summary = ('summed-area tables, fused (C++/OpenMP, CPU); elsewhere and '
               "in ONNX exports the same algorithm in standard ops")
    devices = ('cpu', )
    traceable = False
    custom_op = CUSTOM_OPS
    stand_in = 'box_sums'
    stand_in_for = frozenset({'device', 'traced'})
    costs = {
        # Measured as for 'direct' (2-core x86 CPU): one of the k'^2 + 4k'
        # operations per pixel.
        'cpu': 0.064,
    }
    # How much more its forward and backward weigh than its forward alone,
    # relative to the FFT path's (measured as above: fit_path_costs.py).
    training_factor = 1.27

    def ready(self, request: Request) -> bool:
        # Built by make install (or BUILD_COMMAND); asking for a cost never
        # compiles.
        built = build.is_built()
        if not built and not request.traced:
            build.say_once_it_is_not_built()
        return built

    def work(self, request: Request) -> float:
        padded = -(-request.width // COLUMN_TILE) * COLUMN_TILE
        return request.box_ops * padded / request.width * (
            self.training_factor if request.requires_grad else 1)

    def run(self, x, weight, grid, kernel_size):
        return grid_depthwise_conv_sat(x, weight, grid)
