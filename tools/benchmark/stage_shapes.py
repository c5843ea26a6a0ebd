"""Not a tool: the peripheral conv of each stage of a PeLK arch, as the
built backbone runs it, for what times them per stage
(``peripheral_conv.py --stages`` and ``tools/gpu/check.py``)."""
from typing import List, Union

from pelk_mm.models import PeLK


def peripheral_conv_shapes(arch: Union[str, dict] = 'tiny',
                           image_size: int = 224) -> List[dict]:
    """The peripheral conv of each stage of ``arch`` (with PeLK's
    defaults) on a square image, read off the built backbone.

    Returns:
        list[dict]: Per stage: ``stage`` (1-4), ``channels`` (through the
        peripheral conv), ``size`` (of the square map), ``kernel_size`` and
        ``center_size``.
    """
    model = PeLK(arch)
    stride = model.downsample_layers[0][0].stride[0]  # the stem's patches
    shapes = []
    for index, stage in enumerate(model.stages):
        conv = stage.blocks[0].mixer.large
        shapes.append(
            dict(
                stage=index + 1,
                channels=conv.channels,
                size=image_size // stride >> index,
                kernel_size=conv.kernel_size,
                center_size=conv.center_size))
    return shapes
