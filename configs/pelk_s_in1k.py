# PeLK-S: the PeLK-T recipe with SLaK-S's settings (SLaK's README command):
# drop path 0.4, prune rate 0.3 every 100 iterations.
_base_ = './pelk_t_in1k.py'
model = dict(backbone=dict(arch='small', drop_path_rate=0.4))
custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    dict(
        type='pelk_mm.DynamicSparsityHook',
        sparsity=0.4,
        sparse_init='snip',
        growth='random',
        prune_rate=0.3,
        update_interval=100),
]
