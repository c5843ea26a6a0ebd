# SLaK's sparse=True backbones, for the downstream configs: the zeros of
# the 40%-sparse ImageNet backbone stay zeros while fine-tuning (masks = its
# non-zero conv and linear weights, fixed), so the model is the sparse one
# the paper counts. A dense backbone file is fine-tuned dense, with a
# warning.
custom_hooks = [
    dict(
        type='pelk_mm.DynamicSparsityHook',
        sparse_init='nonzero',
        prune_rate=0.,
        prefix='backbone.'),
]
