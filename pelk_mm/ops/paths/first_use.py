"""The first-use check of paths that have not met every machine they may
run on (``ConvPath.checked_against``): their first call per process and
variant (``ConvPath.check_key``) is compared with the trusted path; where it
fails to run or disagrees, the trusted path serves that variant for the
rest of the process, after one warning."""
import warnings
from typing import Callable, Dict, Tuple

import torch

from .base import ConvPath

# (path name, check key) -> whether the path passed its check there.
_verdicts: Dict[Tuple, bool] = {}


def forget() -> None:
    """Forget every verdict (a process in which nothing was checked)."""
    _verdicts.clear()


def _passes(path: ConvPath, key: tuple, x: torch.Tensor, weight: torch.Tensor,
            grid: torch.Tensor, kernel_size: int, trusted: Callable) -> bool:
    with torch.no_grad():
        try:
            out = path.run(x, weight, grid, kernel_size).float()
        except Exception as error:  # compile errors of a kernel build
            warnings.warn(
                f"path='{path.name}': the kernels failed "
                f"({type(error).__name__}: {str(error)[:300]}); using the "
                f"'{path.checked_against}' path for {key} in this process")
            return False
        expected = trusted(x, weight).float()
    difference = ((out - expected).abs().max() /
                  expected.abs().max().clamp_min(1e-12)).item()
    tolerance = path.tolerance.get(x.dtype, path.tolerance[torch.float32])
    if not difference <= tolerance:
        warnings.warn(
            f"path='{path.name}': the kernels disagree with the "
            f"'{path.checked_against}' path by {difference:.1e} (relative, "
            f"tolerance {tolerance:.0e}) on {key}; using the "
            f"'{path.checked_against}' path there in this process. Please "
            f"report it with your GPU and library versions")
        return False
    return True


def run_checked(path: ConvPath, x: torch.Tensor, weight: torch.Tensor,
                grid: torch.Tensor, kernel_size: int,
                trusted: Callable) -> torch.Tensor:
    """``path.run(...)``, checked once per process and variant against
    ``trusted(x, weight)``, which serves where the check failed."""
    key = path.check_key(x, kernel_size)
    verdict = _verdicts.get((path.name, key))
    if verdict is None:
        verdict = _passes(path, key, x.detach(), weight.detach(), grid,
                          kernel_size, trusted)
        _verdicts[(path.name, key)] = verdict
    if not verdict:
        return trusted(x, weight)
    return path.run(x, weight, grid, kernel_size)
