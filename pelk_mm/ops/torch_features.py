"""What the installed torch offers pelk_mm, and what stands aside without it.

pelk_mm runs on torch 2.1 and newer. A few of its parts use torch APIs
that came later; each is listed in :data:`FEATURES` with the release that
brought it. On an older torch the part stands aside and :func:`has` says so
once, in one line naming what is off and from which torch it is on; the
rest works as before (the fused CPU kernel still runs eagerly, and
checkpoint loading is as strict through pelk_mm's own restricted unpickler).
"""
import logging
import re
from typing import Dict, NamedTuple, Set, Tuple

import torch

logger = logging.getLogger('pelk_mm')


class Feature(NamedTuple):
    """``since``: the first torch release with the API; ``what``: what of
    pelk_mm is off without it (a phrase for the one-line notice)."""
    since: Tuple[int, int]
    what: str


#: Every part of pelk_mm that needs a newer torch than 2.1.
FEATURES: Dict[str, Feature] = {
    # torch.library.custom_op, register_fake, register_autograd
    'custom_ops':
    Feature((2, 4), "the fused CPU kernels inside torch.compile and "
            "torch.export (the 'sat' path's custom ops; graphs take "
            "'box_sums' instead, eager calls still run fused)"),
    # torch.library.triton_op and wrap_triton
    'triton_ops':
    Feature((2, 6), "the Triton path ('triton')"),
    # torch.onnx.export(..., dynamo=True)
    'dynamo_onnx':
    Feature((2, 5), "ONNX export through torch's dynamo exporter (the "
            'TorchScript exporter is used)'),
    # torch.serialization.safe_globals with (function, name) entries
    'safe_globals':
    Feature((2, 6), "torch's weights-only allow-list (checkpoints are read "
            "by pelk_mm's restricted unpickler, as strict)"),
}


def torch_version(version: str = torch.__version__) -> Tuple[int, int]:
    """(major, minor) of a torch version string ('2.1.2+cpu' -> (2, 1))."""
    found = re.match(r'(\d+)\.(\d+)', version)
    if found is None:
        raise ValueError(f'not a torch version: {version!r}')
    return int(found.group(1)), int(found.group(2))


TORCH_VERSION = torch_version()
_noted: Set[str] = set()


def has(feature: str) -> bool:
    """Whether the installed torch has ``feature`` (a key of
    :data:`FEATURES`). Where it does not, the first call logs one line
    saying what is off and from which torch it is on."""
    since, what = FEATURES[feature]
    if TORCH_VERSION >= since:
        return True
    if feature not in _noted:
        _noted.add(feature)
        logger.warning('pelk_mm: %s: off on torch %s (on from torch %d.%d)',
                       what, torch.__version__, *since)
    return False


#: Whether dynamo is tracing (``torch.compile``, ``torch.export``):
#: ``torch.compiler.is_compiling``, torch >= 2.3's name for
#: ``torch._dynamo.is_compiling``.
is_compiling = getattr(torch.compiler, 'is_compiling', None) or \
    torch._dynamo.is_compiling
