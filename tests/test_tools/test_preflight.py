"""The tools' checks that need no dataset: GPUs that torch
cannot use (an NVIDIA driver older than torch's CUDA needs), a misspelt
setting."""
import os.path as osp
import sys

import pytest

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..', 'tools'))
from preflight import unusable_gpus_message  # noqa: E402


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    """``nvidia_smi(output)``: a stub nvidia-smi first on PATH."""

    def install(output):
        stub = tmp_path / 'nvidia-smi'
        stub.write_text(f'#!/bin/sh\nprintf "{output}"\n')
        stub.chmod(0o755)
        monkeypatch.setenv('PATH', f'{tmp_path}')
        monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)

    return install


def test_gpus_torch_cannot_use_stop_the_run_naming_driver_and_fix(nvidia_smi):
    nvidia_smi('NVIDIA A100-SXM4-80GB, 535.104.05\\n'
               'NVIDIA A100-SXM4-80GB, 535.104.05\\n')
    message = unusable_gpus_message('13.0')
    assert 'lists 2 GPU(s) (NVIDIA A100-SXM4-80GB, driver 535.104.05)' in \
        message
    assert 'built for CUDA 13.0' in message and 'R580' in message
    assert 'CUDA_VISIBLE_DEVICES=-1' in message


def test_no_gpu_or_gpus_hidden_on_purpose_pass(nvidia_smi, monkeypatch):
    nvidia_smi('')  # nvidia-smi there, no GPU
    assert unusable_gpus_message('13.0') is None
    nvidia_smi('NVIDIA L4, 550.54.15\\n')
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '-1')
    assert unusable_gpus_message('13.0') is None
    monkeypatch.setenv('PATH', '/nonexistent')  # no nvidia-smi at all
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    assert unusable_gpus_message(None) is None


def test_a_misspelt_setting_is_named_and_variables_pass(load_config):
    """A top-level key spelt nearly as a setting mmengine reads has no
    effect: the tools warn, naming the setting meant; the shipped configs'
    own variables do not warn."""
    from launch import misspelt_settings
    cfg = load_config('demo/upernet_pelk_t_ade20k_demo.py')
    assert misspelt_settings(cfg) == []
    cfg.merge_from_dict({'randomnes': dict(seed=1), 'train_cgf': {}})
    assert misspelt_settings(cfg) == [('randomnes', 'randomness'),
                                      ('train_cgf', 'train_cfg')]


def test_a_loop_length_that_is_not_a_number_is_refused(load_config):
    from launch import check_loop_lengths
    cfg = load_config('demo/upernet_pelk_t_ade20k_demo.py')
    check_loop_lengths(cfg)
    cfg.merge_from_dict({'train_cfg.max_iters': 'four'})
    with pytest.raises(
            SystemExit,
            match="train_cfg.max_iters must be a whole number above 0, got "
            "'four'"):
        check_loop_lengths(cfg)
