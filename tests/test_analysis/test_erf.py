"""Effective receptive field analysis (pelk_mm.analysis.erf and
tools/analysis/erf.py)."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from pelk_mm.analysis.erf import (area_ratio, area_ratios,
                                  effective_receptive_field, erf_of_batch,
                                  log_scaled)
from pelk_mm.models import PeLK


def test_erf_of_a_conv_is_its_kernel_footprint():
    conv = nn.Conv2d(3, 4, 7, padding=3, bias=False)
    nn.init.constant_(conv.weight, 0.1)
    images = torch.rand(2, 3, 33, 33)  # positive: every tap contributes
    erf = erf_of_batch(conv, conv, images)
    assert erf.shape == (33, 33)
    inside = torch.zeros(33, 33, dtype=torch.bool)
    inside[13:20, 13:20] = True
    assert torch.all(erf[inside] > 0)
    assert torch.all(erf[~inside] == 0)
    # Average over batches: two batches of the same images, same map.
    average = effective_receptive_field(conv, conv, [images, images])
    assert np.allclose(average, erf.numpy() / 2)


def test_area_ratio():
    uniform = np.ones((101, 101))
    for t in (0.2, 0.5, 0.99):
        side = int(np.ceil(np.sqrt(t) * 101))
        side += (side + 1) % 2  # centred squares have odd sides
        assert area_ratio(uniform, t) == pytest.approx(side**2 / 101**2)
    delta = np.zeros((51, 51))
    delta[25, 25] = 3.0
    assert area_ratio(delta, 0.99) == pytest.approx(1 / 51**2)
    assert log_scaled(delta).max() == 1.0


def test_a_larger_kernel_has_a_larger_erf():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 96, 96)

    def ratios(kernel_sizes):
        model = PeLK(
            dict(
                depths=[1, 1, 1, 1],
                channels=[16, 24, 32, 40],
                kernel_sizes=kernel_sizes),
            layer_scale_init_value=1.0,
            gap_before_final_norm=False).eval()
        with torch.no_grad():
            for stage in model.stages:
                nn.init.constant_(stage.blocks[0].mixer.large.weight, 0.05)
        erf = effective_receptive_field(model, model.stages[1], [images])
        return area_ratios(erf, (0.5, 0.99))

    small, large = ratios([5, 5, 5, 5]), ratios([31, 31, 13, 13])
    assert large[0.5] > small[0.5] and large[0.99] > small[0.99]


def test_erf_tool_writes_heatmap_and_ratios(tmp_path, run_tool):
    from pelk_mm.synthetic import generate_imagenet
    root = generate_imagenet(str(tmp_path / 'imagenet'), 1, 1)
    out = tmp_path / 'erf'
    run_tool('tools/analysis/erf.py', 'configs/demo/pelk_mini_in1k_demo.py',
             '--img-dir', f'{root}/val', '--num-images', '3', '--size', '64',
             '--out-dir', str(out))
    assert (out / 'pelk_mini_in1k_demo_erf.png').stat().st_size > 1000
    assert np.load(out / 'pelk_mini_in1k_demo_erf.npy').shape == (64, 64)
    report = json.loads((out / 'pelk_mini_in1k_demo_erf.json').read_text())
    assert report['images'] == 3 and report['layer'] == 'backbone.stages.3'
    ratios = [report['area_ratio'][t] for t in ('20%', '30%', '50%', '99%')]
    assert all(0 < r <= 1 for r in ratios) and ratios == sorted(ratios)


def test_erf_tool_writes_over_an_earlier_run_only_when_told(
        tmp_path, run_tool_here):
    """The files of an earlier run in --out-dir are refused before the model
    is built, and left as they were."""
    from pelk_mm.synthetic import generate_imagenet
    root = generate_imagenet(str(tmp_path / 'imagenet'), 1, 1)
    out = tmp_path / 'erf'
    out.mkdir()
    earlier = out / 'pelk_mini_in1k_demo_erf.json'
    earlier.write_text('{"images": 50}')
    proc = run_tool_here(
        'tools/analysis/erf.py',
        'configs/demo/pelk_mini_in1k_demo.py',
        '--img-dir',
        f'{root}/val',
        '--out-dir',
        str(out),
        check=False)
    assert proc.returncode != 0
    assert f'--out-dir {earlier} exists: pass --overwrite' in proc.stderr
    assert earlier.read_text() == '{"images": 50}'
    assert sorted(p.name for p in out.iterdir()) == [earlier.name]


def test_erf_tool_names_a_missing_image_folder(tmp_path, run_tool_here):
    proc = run_tool_here(
        'tools/analysis/erf.py',
        'configs/demo/pelk_mini_in1k_demo.py',
        '--img-dir',
        str(tmp_path / 'nowhere'),
        check=False)
    assert proc.returncode != 0
    assert 'is not a folder' in proc.stderr + proc.stdout


def test_erf_tool_refuses_a_checkpoint_that_does_not_fit(
        tmp_path, run_tool_here):
    """A file whose keys do not fit would leave the backbone at random:
    refused, naming the file, before any image is read."""
    import torch

    from pelk_mm.synthetic import generate_imagenet
    root = generate_imagenet(str(tmp_path / 'imagenet'), 1, 1)
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'encoder.w': torch.zeros(3)}}, other)
    proc = run_tool_here(
        'tools/analysis/erf.py',
        'configs/demo/pelk_mini_in1k_demo.py',
        other,
        '--img-dir',
        f'{root}/val',
        '--out-dir',
        str(tmp_path / 'erf'),
        check=False)
    assert proc.returncode != 0
    assert f"'{other}' does not fit" in proc.stderr
    assert not (tmp_path / 'erf').exists()
