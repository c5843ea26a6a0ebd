"""SLaK's dynamic sparsity hook."""
import logging

import pytest
import torch

from pelk_mm.engine import DynamicSparsityHook
from pelk_mm.models import sparse_weights


@pytest.fixture
def sparsity_runner(make_runner):
    """``make_runner`` with the sparsity hook (SLaK's settings)."""

    def make(tmp_path,
             max_iters,
             interval=2,
             resume=False,
             init='snip',
             prune_rate=0.5,
             **kwargs):
        hook = dict(
            type='pelk_mm.DynamicSparsityHook',
            sparsity=0.4,
            sparse_init=init,
            prune_rate=prune_rate,
            update_interval=interval)
        return make_runner(
            tmp_path,
            max_iters=max_iters,
            resume=resume,
            custom_hooks=[hook],
            **kwargs)

    return make


def the_hook(runner):
    return next(h for h in runner.hooks if isinstance(h, DynamicSparsityHook))


def masked_params(runner):
    hook = the_hook(runner)
    params = dict(runner.model.named_parameters())
    return {n: (params[n], m) for n, m in hook.masks.items()}


@pytest.mark.parametrize('init', ['snip', 'random'])
def test_density_holds_and_masked_weights_stay_zero(tmp_path, init,
                                                    sparsity_runner):
    runner = sparsity_runner(tmp_path, max_iters=5, init=init)
    runner.train()
    layers = masked_params(runner)
    weights = sparse_weights(runner.model)
    # Every conv and linear weight, the classification head's too (SLaK);
    # those SNIP leaves at least 99% dense stay unmasked.
    assert set(the_hook(runner)._params(runner)) == set(weights)
    assert 'head.weight' in weights
    assert 'backbone.stages.0.blocks.0.mixer.large.weight' in layers
    assert set(layers) <= set(weights)
    for name, (param, mask) in layers.items():
        assert torch.all(param[mask == 0] == 0), name
        state = runner.optim_wrapper.optimizer.state[param]
        assert torch.all(state['exp_avg'][mask == 0] == 0), name
    kept = sum(int(m.sum()) for _, m in layers.values()) + sum(
        w.numel() for n, w in weights.items() if n not in layers)
    total = sum(w.numel() for w in weights.values())
    assert kept / total == pytest.approx(0.6, abs=0.01)
    if init == 'random':  # the same density in every layer
        assert set(layers) == set(weights)
        for name, (param, mask) in layers.items():
            assert int(mask.sum()) == round(mask.numel() * 0.6), name


def test_snip_gives_each_layer_its_own_density(tmp_path, sparsity_runner):
    """SLaK's SNIP: one threshold over all layers decides each layer's
    density (they differ and average to 60%); within a layer the kept
    weights are placed at random, not at the top scores."""
    runner = sparsity_runner(tmp_path, max_iters=1, interval=1000)
    hook = the_hook(runner)
    runner.train()
    weights = sparse_weights(runner.model)
    densities = {
        n: float(hook.masks[n].mean()) if n in hook.masks else 1.0
        for n in weights
    }
    assert max(densities.values()) - min(densities.values()) > 0.2
    kept = sum(densities[n] * w.numel() for n, w in weights.items())
    assert kept / sum(w.numel() for w in weights.values()) == \
        pytest.approx(0.6, abs=0.01)
    # The positions are not the top SNIP scores of the layer: recompute the
    # scores on the same model and compare with the kept set.
    params = hook._params(runner)
    scores = hook._snip_scores(runner, params)
    overlaps = []
    for name, mask in hook.masks.items():
        count = int(mask.sum())
        if 10 <= count <= mask.numel() - 10:
            top = torch.zeros(mask.numel(), dtype=torch.bool)
            top[scores[name].flatten().topk(count).indices] = True
            overlaps.append(float((top & mask.flatten().bool()).sum()) / count)
    assert overlaps and sum(overlaps) / len(overlaps) < 0.9


def test_update_prunes_smallest_and_regrows_as_many(tmp_path, sparsity_runner):
    runner = sparsity_runner(tmp_path, max_iters=1, interval=1000)
    runner.train()
    hook = the_hook(runner)
    name = 'backbone.stages.2.blocks.0.pointwise_conv1.weight'
    param, mask = masked_params(runner)[name]
    with torch.no_grad():  # distinct magnitudes, all active ones non-zero
        param.copy_((torch.randn_like(param).abs() + 0.1) * mask)
    before, active = param.detach().clone(), mask.bool().clone()
    count = int(0.3 * int(active.sum()))
    assert count > 0

    hook.update_masks(runner, rate=0.3)
    after = hook.masks[name].bool()
    pruned, grown = active & ~after, ~active & after
    kept = active & after
    assert int(pruned.sum()) == int(grown.sum()) == count
    assert int(after.sum()) == int(active.sum())
    # The pruned weights were the smallest active ones.
    assert before[pruned].abs().max() <= before[kept].abs().min()
    assert torch.all(param.detach()[pruned] == 0)
    assert torch.all(param.detach()[grown] == 0)  # regrown at zero
    assert torch.equal(param.detach()[kept], before[kept])


def test_resume_restores_the_masks(tmp_path, sparsity_runner):
    runner = sparsity_runner(tmp_path, max_iters=4, interval=2)
    runner.train()
    saved = torch.load(tmp_path / 'iter_4.pth', weights_only=False)
    masks = saved['sparsity']['masks']
    assert masks and all(m.dtype == torch.bool for m in masks.values())
    resumed = sparsity_runner(tmp_path, max_iters=5, interval=100, resume=True)
    resumed.train()
    hook = the_hook(resumed)
    for name, mask in masks.items():
        assert torch.equal(hook.masks[name].bool().cpu(), mask), name


def test_fine_tuning_keeps_the_masks_of_a_sparse_checkpoint(
        tmp_path, sparsity_runner):
    """What the 384 configs do: load a sparse model and keep its masks
    (restored from the checkpoint) with no pruning: its zeros stay zeros."""
    runner = sparsity_runner(tmp_path / 'pretrain', max_iters=2)
    runner.train()
    pretrained = {n: m.bool() for n, m in the_hook(runner).masks.items()}
    tuned = sparsity_runner(
        tmp_path / 'tune',
        max_iters=4,
        interval=1,
        init='nonzero',
        prune_rate=0.0,
        load_from=str(tmp_path / 'pretrain/iter_2.pth'))
    tuned.train()
    hook = the_hook(tuned)
    params = dict(tuned.model.named_parameters())
    for name, mask in pretrained.items():
        assert torch.equal(hook.masks[name].bool(), mask), name
        assert torch.all(params[name][~mask] == 0), name


def runner_log(runner):
    """The messages the runner's logger will receive."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    runner.logger.addHandler(handler)
    return records


def test_nonzero_init_takes_the_zeros_of_the_loaded_weights(
        tmp_path, sparsity_runner):
    """SLaK's downstream rule: the masks are the non-zeros of what was
    loaded, and stay fixed; the other weights train."""
    source = sparsity_runner(tmp_path / 'source', max_iters=1)
    torch.manual_seed(0)
    zeros = {}
    with torch.no_grad():
        for name, param in sparse_weights(source.model).items():
            zeros[name] = torch.rand(param.shape) < 0.4
            param[zeros[name]] = 0
    torch.save({'state_dict': source.model.state_dict()},
               tmp_path / 'sparse.pth')
    runner = sparsity_runner(
        tmp_path / 'tune',
        max_iters=3,
        init='nonzero',
        prune_rate=0.0,
        load_from=str(tmp_path / 'sparse.pth'))
    runner.train()
    hook = the_hook(runner)
    for name, param in sparse_weights(runner.model).items():
        assert torch.equal(hook.masks[name].bool(), ~zeros[name]), name
        assert torch.all(param[zeros[name]] == 0), name
        assert not torch.equal(param, source.model.state_dict()[name]), name


def test_nonzero_init_leaves_a_dense_model_dense(tmp_path, sparsity_runner):
    runner = sparsity_runner(tmp_path, max_iters=1, init='nonzero')
    log = runner_log(runner)
    runner.train()
    assert the_hook(runner).masks == {}
    assert any(
        'are dense' in r.getMessage() and 'another model' in r.getMessage()
        for r in log)


def test_masks_that_do_not_fit_are_computed_again(tmp_path, sparsity_runner):
    runner = sparsity_runner(tmp_path / 'a', max_iters=2, init='random')
    runner.train()
    checkpoint = torch.load(tmp_path / 'a' / 'iter_2.pth', weights_only=False)
    name = 'backbone.stages.0.blocks.0.mixer.large.weight'
    checkpoint['sparsity']['masks'][name] = torch.ones(3, 3, dtype=bool)
    torch.save(checkpoint, tmp_path / 'other.pth')
    tuned = sparsity_runner(
        tmp_path / 'b',
        max_iters=1,
        interval=1000,
        init='random',
        load_from=str(tmp_path / 'other.pth'))
    log = runner_log(tuned)
    tuned.train()
    mask = the_hook(tuned).masks[name]
    assert mask.shape == sparse_weights(tuned.model)[name].shape
    assert any('do not fit this model' in r.getMessage() for r in log)


def test_prune_rate_anneals_with_a_cosine():
    hook = DynamicSparsityHook(prune_rate=0.5)

    class At:

        def __init__(self, it):
            self.iter, self.max_iters = it, 100

    assert hook.current_prune_rate(At(0)) == pytest.approx(0.5)
    assert hook.current_prune_rate(At(50)) == pytest.approx(0.25)
    assert hook.current_prune_rate(At(100)) == pytest.approx(0.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match='sparsity must be in'):
        DynamicSparsityHook(sparsity=1.0)
    with pytest.raises(ValueError, match='sparse_init'):
        DynamicSparsityHook(sparse_init='erk')
    with pytest.raises(ValueError, match="growth='random'"):
        DynamicSparsityHook(growth='gradient')
    with pytest.raises(ValueError, match='prune_rate'):
        DynamicSparsityHook(prune_rate=1.0)


def _distributed_masks(rank, world_size, port, out_dir):
    """One process: random masks seeded per rank, then the hook's sync."""
    import types

    import torch.distributed as dist
    import torch.nn as nn
    dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world_size)
    try:
        model = nn.Module()
        model.backbone = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
        hook = DynamicSparsityHook(sparse_init='random', seed=rank)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        runner = types.SimpleNamespace(
            model=model,
            optim_wrapper=types.SimpleNamespace(optimizer=optimizer),
            iter=0,
            max_iters=10)
        hook._init_masks(runner)
        hook.update_masks(runner, rate=0.5)  # random regrowth, synced too
        torch.save({
            n: m.bool()
            for n, m in hook.masks.items()
        }, f'{out_dir}/masks_{rank}.pth')
    finally:
        dist.destroy_process_group()


def test_ranks_share_rank_0_masks(tmp_path, free_port):
    """Each rank draws different random masks; after the hook's broadcast
    every replica holds the same ones (rank 0's)."""
    import torch.multiprocessing as mp
    mp.spawn(_distributed_masks, args=(2, free_port, str(tmp_path)), nprocs=2)
    rank0 = torch.load(tmp_path / 'masks_0.pth')
    rank1 = torch.load(tmp_path / 'masks_1.pth')
    assert set(rank0) == {'backbone.0.weight', 'backbone.1.weight'}
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
