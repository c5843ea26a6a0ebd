# PeLK-B: the PeLK-S recipe with SLaK-B's drop path 0.5.
_base_ = './pelk_s_in1k.py'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5),
    head=dict(in_channels=1331))
