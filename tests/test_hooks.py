import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from test_checkpoint import make_runner

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                   'configs')


def test_progress_bar_hook_draws_every_iteration(tmp_path, capfd):
    runner = make_runner(tmp_path, max_iters=3,
                         custom_hooks=[dict(type='pelk_mm.ProgressBarHook')])
    runner.train()
    out = capfd.readouterr().out
    assert re.search(r'\] 3/3, [\d.]+ task/s', out)
    assert '1/3' in out and '2/3' in out


class PoisonAtIteration(Hook):
    """Turns the classifier's weights to NaN before iteration ``at``."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            with torch.no_grad():
                runner.model.head.weight.fill_(float('nan'))


def test_finite_loss_hook_stops_before_a_nan_checkpoint(tmp_path):
    # Without the hook (the premise): the run ends normally and its last
    # checkpoint is NaN.
    make_runner(tmp_path / 'unguarded', max_iters=4,
                custom_hooks=[PoisonAtIteration(3)]).train()
    state = torch.load(tmp_path / 'unguarded' / 'iter_4.pth',
                       weights_only=False)['state_dict']
    assert state['head.weight'].isnan().all()

    runner = make_runner(tmp_path / 'guarded', max_iters=4, custom_hooks=[
        PoisonAtIteration(3), dict(type='pelk_mm.FiniteLossHook')])
    with pytest.raises(FloatingPointError,
                       match=r'non-finite loss at iteration 3 .*loss=nan'):
        runner.train()
    assert not (tmp_path / 'guarded' / 'iter_4.pth').exists()
    state = torch.load(tmp_path / 'guarded' / 'iter_2.pth',
                       weights_only=False)['state_dict']
    assert all(value.isfinite().all() for value in state.values())


@pytest.mark.parametrize('config', [
    'upernet_pelk_t_ade20k.py', 'upernet_pelk_b101_ade20k.py',
    'cascade_mask_rcnn_pelk_t_coco.py',
    'cascade_mask_rcnn_pelk_t_coco_demo.py',
    'pelk_t_in1k.py', 'pelk_b_in1k-384.py', 'pelk_mini_in1k_demo.py',
    'upernet_pelk_t_ade20k_demo.py'
])
def test_every_recipe_stops_on_non_finite_loss(config):
    cfg = Config.fromfile(osp.join(CONFIGS, config))
    assert cfg.default_hooks.finite_loss.type == 'pelk_mm.FiniteLossHook'
