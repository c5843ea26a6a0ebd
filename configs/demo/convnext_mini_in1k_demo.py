# The baseline of the classification demo: mmpretrain's ConvNeXt (7x7
# depthwise kernels) at the demo's depths and widths, trained the same way
# (data, schedule, EMA) but dense, as ConvNeXt is. Used to compare effective
# receptive fields (tools/analysis/erf.py, README).
_base_ = './pelk_mini_in1k_demo.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ConvNeXt',
        arch=dict(depths=[2, 2, 4, 2], channels=[64, 128, 256, 512]),
        drop_path_rate=0.1))
custom_hooks = [
    dict(type='EMAHook', momentum=0.02, priority='ABOVE_NORMAL'),
    dict(type='pelk_mm.ProgressBarHook'),
]
