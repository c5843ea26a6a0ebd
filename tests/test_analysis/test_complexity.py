"""Parameters and FLOPs of the downstream configs, as the paper counts
them (:func:`pelk_mm.analysis.config_complexity`)."""
import os.path as osp

import pytest
from conftest import paper_counts

from pelk_mm.analysis import config_complexity


@pytest.mark.slow  # builds the full-size models (about a minute each)
@pytest.mark.parametrize(
    'config, task, measured',
    [
        # params / FLOPs at 2048x512
        ('upernet_pelk_t_ade20k.py', 'segmentation', (63.33e6, 971.6e9)),
        # at 1280x800, mmdet 2.x's forward_dummy convention
        ('cascade_mask_rcnn_pelk_t_coco.py', 'detection', (87.23e6, 770.2e9)),
    ])
def test_counts_match_the_paper(config, task, measured, load_config):
    """Within 5% (params) and 10% (FLOPs) of the metafile's, the paper's;
    and what we counted before, within 0.1%."""
    cfg = load_config(config)
    cfg.model.backbone.init_cfg = None
    params, flops = config_complexity(cfg)
    paper_params, paper_flops = paper_counts(task, osp.splitext(config)[0])
    assert abs(params / paper_params - 1) < 0.05
    assert abs(flops / paper_flops - 1) < 0.10
    assert (params, flops) == pytest.approx(measured, rel=1e-3)
