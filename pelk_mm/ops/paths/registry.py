"""The registered paths of the peripheral conv, by name (see
:mod:`pelk_mm.ops.paths`)."""
from typing import Dict

from .base import ConvPath
from .box_sums import BoxSumsPath
from .direct import DirectPath
from .fft import FFTPath
from .sat import SatPath
from .triton import TritonPath

#: name -> path, in the order ties are broken.
REGISTRY: Dict[str, ConvPath] = {
    path.name: path
    for path in (DirectPath(), FFTPath(), BoxSumsPath(), SatPath(),
                 TritonPath())
}
#: What ``path=`` takes.
PATHS = ('auto', ) + tuple(REGISTRY)


def get(name: str) -> ConvPath:
    """The registered path ``name``.

    Raises:
        ValueError: If no path has that name.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f'path must be one of {PATHS}, got {name!r}') \
            from None
