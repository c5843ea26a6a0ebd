"""The one checkpoint-fit module: prefix strip, mismatch errors, loading."""
import pytest
import torch
import torch.nn as nn

from pelk_mm.runtime import checkpoint_fit as fit


def test_prefix_strip_keeps_only_what_is_under_it():
    state = {'backbone.a': 1, 'backbone.b.c': 2, 'head.w': 3}
    assert fit.strip_prefix(state, 'backbone') == {'a': 1, 'b.c': 2}
    assert fit.strip_prefix(state, 'backbone.') == {'a': 1, 'b.c': 2}
    assert fit.strip_prefix(state, None) is state
    assert fit.without_wrapper_prefix({'module.a': 1, 'b': 2}) == \
        {'a': 1, 'b': 2}
    assert fit.state_dict_of({'state_dict': {'a': 1}, 'meta': {}}) == \
        {'a': 1}
    assert fit.state_dict_of({'a': 1}) == {'a': 1}


def test_a_missing_file_names_the_setting_and_the_fix(tmp_path):
    with pytest.raises(
            FileNotFoundError,
            match=r"checkpoint '.*nope.pth' \(load_from\) does not exist: "
            r'train one first'):
        fit.require_file(
            str(tmp_path / 'nope.pth'), 'load_from', 'train one first')
    real = tmp_path / 'real.pth'
    real.write_bytes(b'')
    assert fit.require_file(str(real), 'load_from') == str(real)
    assert fit.require_file('https://x/y.pth', 'load_from') == \
        'https://x/y.pth'


def test_load_fitting_refuses_what_it_would_leave_unloaded():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    del state['1.bias']
    with pytest.raises(
            fit.CheckpointMismatchError,
            match=r"checkpoint 'x.pth' does not fit the toy: it leaves 1 of "
            r'its 4 weights unloaded \(e.g. 1.bias\); the file.s keys look '
            r'like 0.bias, 0.weight, 1.weight\. It was written for another '
            r'model or config, or its keys were renamed\. Use the right one'):
        fit.load_fitting(
            model, state, 'x.pth', 'the toy', hint='Use the right one.')
    loaded = fit.load_fitting(
        model, state, 'x.pth', 'the toy', allow_missing=r'1\.bias')
    assert loaded.allowed_missing == ['1.bias']
    assert torch.all(model[0].weight == 0)


def test_load_fitting_refuses_other_shapes_and_extra_weights():
    model = nn.Linear(2, 3)
    with pytest.raises(
            fit.CheckpointMismatchError,
            match=r'does not fit it: shapes differ: size mismatch '
            r'for weight.*Another arch'):
        fit.load_fitting(
            model, {
                'weight': torch.zeros(4, 2),
                'bias': torch.zeros(3)
            },
            'x.pth',
            'it',
            shape_hint='Another arch.')
    extra = dict(model.state_dict(), other=torch.zeros(1))
    with pytest.raises(
            fit.CheckpointMismatchError,
            match=r'holds 1 weights it does not have \(e.g. '
            r'other\)'):
        fit.load_fitting(model, extra, 'x.pth', 'it')
    assert fit.load_fitting(
        model, extra, 'x.pth', 'it',
        allow_unexpected=True).unexpected == ['other']


# ---------------------------------- the hook of tools/test.py and load_from


def check_with_hook(state, **options):
    """CheckpointFitsHook on a conv + BN model, given ``state``."""
    from types import SimpleNamespace

    from pelk_mm.runtime import CheckpointFitsHook
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    hook = CheckpointFitsHook('ck.pth', hint='Pass X.', **options)
    hook.after_load_checkpoint(
        SimpleNamespace(model=model), {'state_dict': state})


def full_state():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).state_dict()


def test_fits_hook_takes_a_full_file_and_one_without_the_batch_counter():
    check_with_hook(full_state())
    state = full_state()
    del state['1.num_batches_tracked']  # absent from old torch's files
    check_with_hook(state)
    check_with_hook({f'module.{k}': v for k, v in full_state().items()})


def test_fits_hook_refuses_missing_statistics_shapes_and_nan_values():
    state = {k: v for k, v in full_state().items() if 'running' not in k}
    with pytest.raises(
            fit.CheckpointMismatchError,
            match=r"'ck.pth' does not fit the model: it leaves 2 of its 6 "
            r'weights and buffers unloaded \(e.g. 1.running_mean, '
            r'1.running_var\).*Pass X.'):
        check_with_hook(state)
    state = dict(full_state(), **{'0.weight': torch.zeros(5, 3, 3, 3)})
    with pytest.raises(
            fit.CheckpointMismatchError,
            match=r'1 of its 6 weights and buffers have other shapes '
            r'\(e.g. 0.weight: \(5, 3, 3, 3\) in the file, \(4, 3, 3, 3\) '
            r'in the model\)'):
        check_with_hook(state)
    nan = dict(full_state(),
               **{'1.running_var': torch.full((4, ), float('inf'))})
    with pytest.raises(
            fit.CheckpointMismatchError,
            match=r'NaN or infinite values in 1 tensors \(e.g. '
            r'1.running_var\).*--allow-nonfinite'):
        check_with_hook(nan)


def test_fits_hook_options_allow_what_they_name_and_no_more():
    check_with_hook(
        dict(full_state(), **{'0.bias': torch.tensor([float('nan')] * 4)}),
        allow_nonfinite=True)
    partial = {k: v for k, v in full_state().items() if 'running' not in k}
    check_with_hook(partial, allow_missing=True)
    partial['0.bias'] = torch.full((4, ), float('inf'))
    with pytest.raises(fit.CheckpointMismatchError, match='0.bias'):
        check_with_hook(partial, allow_missing=True)
