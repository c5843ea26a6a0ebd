import torch.nn as nn

from pelk_mm.models import PeLK, sparse_weights


def test_sparse_weights_are_slaks_plus_the_peripheral_block_weights():
    """SLaK masks every 2-D and 4-D weight (conv and linear); PeLK's 3-D
    peripheral block weights are conv weights too, its 3-D positional
    embeddings are not."""
    model = nn.Sequential(PeLK('tiny'), nn.Linear(10, 3))
    names = set(sparse_weights(model))
    params = dict(model.named_parameters())
    slak = {n for n, p in params.items() if p.dim() in (2, 4)}
    peripheral = {n for n in params if n.endswith('mixer.large.weight')}
    assert len(peripheral) == 18  # PeLK-T: 3 + 3 + 9 + 3 blocks
    assert names == slak | peripheral
    assert not any('pos_embed' in n for n in names)
    assert '1.weight' in names
    assert set(sparse_weights(model, prefix='1.')) == {'1.weight'}
