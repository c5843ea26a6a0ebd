"""The first-use check of paths that have not met every machine they may
run on (``ConvPath.checked_against``): their first call per process and
variant (``ConvPath.check_key``: what selects a compiled kernel) is
compared with the trusted path, the output and, where a backward pass will
follow, both gradients. Where it fails to run or disagrees, the trusted
path serves that variant for the rest of the process, after one warning;
so it does where a later call of a checked variant fails to compile or
launch, in the forward or in the backward (:class:`Guard`; the backward is
the path's own, its registered autograd, run under :class:`_GuardedBackward`
so that its failure can be taken over)."""
import warnings
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch.autograd.function import once_differentiable

from .base import ConvPath, add_and_write, relative_error

# (path name, check key) -> what the path passed there: 'output' (checked
# without gradients), 'gradients' (the output and both gradients), or False
# (it failed: the trusted path serves).
_verdicts: Dict[Tuple, Union[str, bool]] = {}

_PARTS = ('output', 'input gradient', 'weight gradient')


def forget() -> None:
    """Forget every verdict (a process in which nothing was checked)."""
    _verdicts.clear()


def _outputs(run: Callable, x: torch.Tensor, weight: torch.Tensor,
             with_grad: bool) -> Sequence[torch.Tensor]:
    """``run(x, weight)``, with the gradients of a fixed random output
    gradient where ``with_grad``."""
    if not with_grad:
        with torch.no_grad():
            return [run(x, weight)]
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        weight = weight.detach().requires_grad_()
        out = run(x, weight)
        seed = torch.Generator(device=out.device).manual_seed(0)
        grad_out = torch.randn(
            out.shape, generator=seed, device=out.device, dtype=out.dtype)
        return [out.detach(), *torch.autograd.grad(out, (x, weight), grad_out)]


def _passes(path: ConvPath, key: tuple, x: torch.Tensor, weight: torch.Tensor,
            grid: torch.Tensor, kernel_size: int, trusted: Callable,
            addend: Optional[torch.Tensor], with_grad: bool) -> bool:
    try:
        got = _outputs(
            lambda x, w: path.run_fused(x, w, grid, kernel_size, addend), x,
            weight, with_grad)
    except Exception as error:  # compile errors of a kernel build
        warnings.warn(
            f"path='{path.name}': the kernels failed "
            f"({type(error).__name__}: {str(error)[:300]}); using the "
            f"'{path.checked_against}' path for {key} in this process")
        return False
    expected = _outputs(
        lambda x, w: add_and_write(trusted(x, w), addend, None), x, weight,
        with_grad)
    tolerance = path.tolerance.get(x.dtype, path.tolerance[torch.float32])
    for part, out, reference in zip(_PARTS, got, expected):
        difference = relative_error(out, reference)
        if not difference <= tolerance:
            warnings.warn(
                f"path='{path.name}': the kernels disagree with the "
                f"'{path.checked_against}' path by {difference:.1e} "
                f'(relative, tolerance {tolerance:.0e}) in the {part} on '
                f"{key}; using the '{path.checked_against}' path there in "
                f'this process. Please report it with your GPU and library '
                f'versions')
            return False
    return True


class Guard:
    """What takes over where a checked variant later fails to compile or
    launch: one warning, the variant's verdict turned, and the trusted
    path's answer.

    Args:
        path (ConvPath): The path that failed.
        key (tuple): Its check key.
        trusted (callable): ``trusted(x, weight)``, differentiable.
    """

    def __init__(self, path: ConvPath, key: tuple, trusted: Callable):
        self.path, self.key, self.trusted = path, key, trusted

    def failed(self, error: Exception, during: str) -> None:
        _verdicts[(self.path.name, self.key)] = False
        warnings.warn(
            f"path='{self.path.name}': the kernels of a checked variant "
            f'failed in a later {during} ({type(error).__name__}: '
            f"{str(error)[:300]}); using the '{self.path.checked_against}' "
            f'path for {self.key} in this process')

    def recover(self, error: Exception, during: str, x: torch.Tensor,
                weight: torch.Tensor, grad_out: torch.Tensor,
                needs: Sequence[bool]) -> Tuple[Optional[torch.Tensor], ...]:
        """After :meth:`failed`, the gradients (None where not ``needs``)
        of ``grad_out`` through the trusted path."""
        self.failed(error, during)
        with torch.enable_grad():
            inputs = [
                t.detach().requires_grad_(need)
                for t, need in zip((x, weight), needs)
            ]
            out = self.trusted(*inputs)
            wanted = [t for t in inputs if t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad_out))
        return tuple(next(grads) if need else None for need in needs)


class _GuardedBackward(torch.autograd.Function):
    """``run(x, weight, addend)`` as computed; its backward is the path's
    own (the autograd its ops registered), and where that fails to compile
    or launch, the guard's (the trusted path's gradients)."""

    @staticmethod
    def forward(ctx, x, weight, addend, run, guard):
        inputs = [
            None if t is None else t.detach().requires_grad_(t.requires_grad)
            for t in (x, weight, addend)
        ]
        with torch.enable_grad():
            out = run(*inputs)
        ctx.inner = (inputs, out)
        ctx.guard = guard
        return out.detach()

    @staticmethod
    @once_differentiable  # the kernels build no graph of their own
    def backward(ctx, grad_out):
        inputs, out = ctx.inner
        del ctx.inner
        needs = [t is not None and t.requires_grad for t in inputs]
        try:
            found = iter(
                torch.autograd.grad(
                    out, [t for t, need in zip(inputs, needs) if need],
                    grad_out))
            grads = [next(found) if need else None for need in needs]
        except Exception as error:  # a compile or launch failure
            x, weight, addend = inputs
            grads = [
                *ctx.guard.recover(error, 'backward', x, weight, grad_out,
                                   needs[:2]),
                grad_out.sum_to_size(addend.shape) if needs[2] else None
            ]
        return (*grads, None, None)


def run_checked(path: ConvPath,
                x: torch.Tensor,
                weight: torch.Tensor,
                grid: torch.Tensor,
                kernel_size: int,
                trusted: Callable,
                addend: Optional[torch.Tensor] = None,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``path.run_fused(...)``, checked once per process and variant
    against ``trusted(x, weight)`` (plus ``addend``), which serves where the
    check failed or a later call fails to run. A variant checked without
    gradients is checked again, gradients included, the first time a
    backward will follow."""
    with_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, addend))
    key = path.check_key(x, weight, kernel_size, addend)
    verdict = _verdicts.get((path.name, key))
    if verdict is None or (with_grad and verdict == 'output'):
        passed = _passes(path, key, x.detach(), weight.detach(), grid,
                         kernel_size, trusted,
                         None if addend is None else addend.detach(),
                         with_grad)
        verdict = passed and ('gradients' if with_grad else 'output')
        _verdicts[(path.name, key)] = verdict
    if not verdict:
        return add_and_write(trusted(x, weight), addend, out)
    guard = Guard(path, key, trusted)
    try:
        if not with_grad:
            return path.run_fused(x, weight, grid, kernel_size, addend, out)
        result = _GuardedBackward.apply(
            x, weight, addend,
            lambda x, w, a: path.run_fused(x, w, grid, kernel_size, a), guard)
        return result if out is None else out.copy_(result)
    except Exception as error:  # a later compile or launch failure
        guard.failed(error, 'forward')
        return add_and_write(trusted(x, weight), addend, out)
