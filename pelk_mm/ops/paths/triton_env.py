"""What the ``'triton'`` path needs of its environment, asked without
importing triton (importing pelk_mm imports none, and ``TRITON_INTERPRET``
may be set until the kernels are first used): whether triton is installed,
whether this torch registers Triton kernels as ops, and where they run.
Both Triton modules (:mod:`.triton`, :mod:`.triton_kernels`) read it."""
import importlib.util
import os
from typing import Optional

import torch

from ..torch_features import FEATURES, has

# Looked up once (no import): a compiled graph's trace cannot search paths.
TRITON_INSTALLED = importlib.util.find_spec('triton') is not None
#: The kernels are registered with ``torch.library.triton_op`` (torch 2.6).
TRITON_OPS = TRITON_INSTALLED and has('triton_ops')


def interpreted() -> bool:
    """Whether Triton runs through its interpreter (CPU tensors)."""
    return os.environ.get('TRITON_INTERPRET') == '1'


def available_on(device: torch.device) -> bool:
    """Whether the kernels can run on tensors of ``device``."""
    return unavailable_on(device.type) is None


def unavailable_on(device_type: str) -> Optional[tuple]:
    """Why the kernels cannot run on tensors of ``device_type``: (the kind
    of refusal, the reason), or None where they can."""
    if not TRITON_INSTALLED:
        return ('unavailable', "the 'triton' path needs triton (pip install "
                'triton), which is not installed')
    if not TRITON_OPS:
        return ('unavailable', "the 'triton' path needs torch >= %d.%d, this "
                'is torch %s' %
                (*FEATURES['triton_ops'].since, torch.__version__))
    if device_type == 'cuda' or (device_type == 'cpu' and interpreted()):
        return None
    return ('device', "the 'triton' path runs on CUDA devices (or on the "
            'CPU under TRITON_INTERPRET=1 set before triton is imported), '
            f'this map is on {device_type}')
