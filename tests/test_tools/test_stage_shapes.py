"""tools/benchmark/stage_shapes.py: the per-stage shapes the benchmarks and
the GPU check time."""
import sys
from pathlib import Path

import pytest
import torch

from pelk_mm.models import PeLK
from pelk_mm.ops import PeripheralConv2d

sys.path.insert(
    0, str(Path(__file__).resolve().parents[2] / 'tools' / 'benchmark'))
from stage_shapes import peripheral_conv_shapes  # noqa: E402


@pytest.mark.parametrize('arch', ['tiny', 'base-101'])
def test_peripheral_conv_shapes_are_those_of_the_built_model(arch):
    """What the benchmarks time per stage is what the backbone runs: the
    channels, map size and K of every peripheral conv, seen by hooks on a
    forward pass of the built model."""
    seen = {}

    def record(module, inputs):
        seen.setdefault(module.kernel_size, set()).add(
            (inputs[0].shape[1], inputs[0].shape[-1]))

    model = PeLK(arch, out_indices=(0, 1, 2, 3))
    for module in model.modules():
        if isinstance(module, PeripheralConv2d):
            module.register_forward_pre_hook(record)
    with torch.no_grad():
        model(torch.randn(1, 3, 128, 128))
    expected = {
        conv['kernel_size']: {(conv['channels'], conv['size'])}
        for conv in peripheral_conv_shapes(arch, 128)
    }
    assert seen == expected
