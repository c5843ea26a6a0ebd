"""The mask algebra of dynamic sparsity, on tensors (no Runner)."""
import math

import pytest
import torch

from pelk_mm.engine import sparse_masks


def weights(seed=0):
    torch.manual_seed(seed)
    return {
        'a': torch.randn(8, 4, 3, 3),
        'b': torch.randn(16, 8),
        'c': torch.randn(5),
    }


def test_uniform_counts_keep_one_minus_sparsity_of_every_layer():
    counts = sparse_masks.uniform_keep_counts(weights(), 0.4)
    assert counts == {'a': round(288 * 0.6), 'b': round(128 * 0.6), 'c': 3}
    assert sparse_masks.uniform_keep_counts({'x': torch.ones(2)}, 0.99) == \
        {'x': 1}  # never a layer cut off


def test_snip_counts_share_one_threshold_over_all_layers():
    # Layer 'hi' holds all the large scores: it keeps everything kept.
    scores = {'hi': torch.arange(10.) + 100, 'lo': torch.arange(10.)}
    assert sparse_masks.snip_keep_counts(scores, 0.5) == {'hi': 9, 'lo': 1}
    scores = {'x': torch.tensor([4., 3., 2., 1.])}
    # keep 2 of 4: the threshold is the 2nd largest score; SLaK keeps
    # what lies strictly above it.
    assert sparse_masks.snip_keep_counts(scores, 0.5) == {'x': 1}


def test_snip_scores_are_weight_times_gradient():
    w = {'x': torch.tensor([2., -3.]), 'y': torch.tensor([1.])}
    scores = sparse_masks.snip_scores(w, {
        'x': torch.tensor([-1., 2.]),
        'y': None
    })
    assert torch.equal(scores['x'], torch.tensor([2., 6.]))
    assert torch.equal(scores['y'], torch.tensor([0.]))


@pytest.mark.parametrize('by', ['random', 'magnitude'])
def test_placed_masks_keep_exactly_the_counts(by):
    params = weights()
    counts = {'a': 100, 'b': 7, 'c': 5}
    masks = sparse_masks.place_masks(params, counts, by,
                                     torch.Generator().manual_seed(0))
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[name].shape
        assert int(mask.sum()) == counts[name]
    if by == 'magnitude':
        kept = params['a'].abs()[masks['a']]
        dropped = params['a'].abs()[~masks['a']]
        assert kept.min() >= dropped.max()
    with pytest.raises(ValueError, match="'magnitude' or 'random'"):
        sparse_masks.place_masks(params, counts, 'snip', torch.Generator())


def test_random_placement_follows_the_generator():
    params, counts = weights(), {'a': 50, 'b': 50, 'c': 2}

    def draw(seed):
        return sparse_masks.place_masks(params, counts, 'random',
                                        torch.Generator().manual_seed(seed))

    assert all(torch.equal(draw(1)[n], draw(1)[n]) for n in params)
    assert not torch.equal(draw(1)['a'], draw(2)['a'])


def test_dense_layers_are_left_unmasked():
    masks = {
        'dense': torch.ones(200, dtype=torch.bool),
        'sparse': torch.arange(200) < 100
    }
    masks['dense'][0] = False  # 99.5% dense: still left alone
    assert list(sparse_masks.without_dense_layers(masks)) == ['sparse']
    assert sparse_masks.density(masks) == pytest.approx(299 / 400)


def test_nonzero_masks_are_the_loaded_zeros():
    w = {'x': torch.tensor([[0., 1.], [2., 0.]])}
    assert torch.equal(
        sparse_masks.nonzero_masks(w)['x'],
        torch.tensor([[False, True], [True, False]]))


def test_prune_rate_anneals_with_a_cosine_to_zero():
    assert sparse_masks.cosine_prune_rate(0.5, 0) == 0.5
    assert sparse_masks.cosine_prune_rate(0.5, 0.5) == pytest.approx(0.25)
    assert sparse_masks.cosine_prune_rate(0.5, 1) == pytest.approx(0)
    assert sparse_masks.cosine_prune_rate(0.5, 2) == pytest.approx(0)
    assert sparse_masks.cosine_prune_rate(0.3, 0.25) == pytest.approx(
        0.3 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_prune_and_regrow_moves_the_smallest_and_keeps_the_density():
    torch.manual_seed(0)
    weight = torch.randn(40, 10)
    mask = (torch.rand(40, 10) < 0.5).float()
    weight *= mask
    before_mask, before_weight = mask.clone(), weight.clone()
    moved = sparse_masks.prune_and_regrow(weight, mask, 0.3,
                                          torch.Generator().manual_seed(0))
    active = int(before_mask.sum())
    assert moved == int(0.3 * active)
    assert int(mask.sum()) == active  # density unchanged
    pruned = before_mask.bool() & ~mask.bool()
    regrown = ~before_mask.bool() & mask.bool()
    assert int(pruned.sum()) == int(regrown.sum()) == moved
    # The pruned are the smallest of the active weights.
    survivors = before_mask.bool() & mask.bool()
    assert before_weight.abs()[pruned].max() <= \
        before_weight.abs()[survivors].min()
    # Regrown weights start at zero.
    assert torch.all(weight[regrown] == 0)
    assert sparse_masks.prune_and_regrow(weight, mask, 0.0,
                                         torch.Generator()) == 0


def test_applied_masks_zero_weights_and_their_moments():
    w = {'x': torch.ones(2, 3)}
    mask = {'x': torch.tensor([[1., 0., 1.], [0., 1., 1.]])}
    state = {w['x']: {'exp_avg': torch.ones(2, 3), 'step': torch.tensor(4.)}}
    sparse_masks.apply_masks(w, mask, state)
    assert torch.equal(w['x'], mask['x'])
    assert torch.equal(state[w['x']]['exp_avg'], mask['x'])
    assert state[w['x']]['step'] == 4  # not of the weight's shape
