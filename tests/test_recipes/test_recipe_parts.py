"""A user's own config over stock mmseg/mmdet bases takes PeLK's parts
(pelk_mm.recipes); CI also trains and tests them with the stock tools
(tools/test_matrix.sh)."""
import os.path as osp

import pytest
from conftest import REPO
from mmengine.config import Config

from pelk_mm.recipes import recipe_part, stage_widths

USER_PROJECT = osp.join(REPO, 'tests', 'user_project')


def test_stock_upernet_takes_pelks_backbone_schedule_and_sparsity():
    cfg = Config.fromfile(osp.join(USER_PROJECT, 'upernet_pelk_t_mine.py'))
    ours = Config.fromfile(
        osp.join(REPO, 'configs', 'upernet_pelk_t_ade20k.py'))
    # Replaced whole: no key of the stock ResNet-50 or SGD is left.
    assert cfg.model.backbone.to_dict() == ours.model.backbone.to_dict()
    assert cfg.optim_wrapper.to_dict() == ours.optim_wrapper.to_dict()
    assert cfg.param_scheduler == ours.param_scheduler
    assert cfg.custom_hooks == ours.custom_hooks
    assert cfg.model.decode_head.in_channels == [124, 249, 499, 998]
    assert cfg.model.auxiliary_head.in_channels == 499
    assert cfg.model.pretrained is None


def test_stock_mask_rcnn_takes_pelks_backbone_and_optimizer():
    cfg = Config.fromfile(osp.join(USER_PROJECT, 'mask_rcnn_pelk_t_mine.py'))
    ours = Config.fromfile(
        osp.join(REPO, 'configs', 'cascade_mask_rcnn_pelk_t_coco.py'))
    assert cfg.model.backbone.to_dict() == ours.model.backbone.to_dict()
    assert cfg.optim_wrapper.to_dict() == ours.optim_wrapper.to_dict()
    assert cfg.model.neck.in_channels == stage_widths('tiny')


def test_parts_name_what_is_missing():
    with pytest.raises(
            FileNotFoundError,
            match="no config 'nope.py'.*"
            'upernet_pelk_t_ade20k.py'):
        recipe_part('nope.py', 'model')
    with pytest.raises(KeyError, match="no 'model.neck'.*decode_head"):
        recipe_part('upernet_pelk_t_ade20k.py', 'model.neck')
    with pytest.raises(KeyError, match="no arch 'huge'.*base-101"):
        stage_widths('huge')
    assert stage_widths('base') == [166, 332, 665, 1331]
