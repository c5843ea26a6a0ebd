# UperNet with a PeLK-T backbone (mmseg's UperNet, ResNet swapped out), as
# SLaK's upernet_slak_*_512_160k_ade20k_ss.py: SyncBN in the heads and in the
# backbone's own BN layers (SLaK builds them as SyncBatchNorm); tools/train.py
# builds them as BN on a machine without a GPU.
_base_ = ['mmseg::_base_/models/upernet_r50.py']
custom_imports = dict(imports=['pelk_mm'], allow_failed_imports=False)

norm_cfg = dict(type='SyncBN', requires_grad=True)
# Written by tools/model_converters/cls_to_backbone.py from an ImageNet
# classification checkpoint (keys 'backbone.*').
checkpoint_file = 'checkpoints/pelk_t_in1k_backbone.pth'
model = dict(
    pretrained=None,  # the base's ResNet weights
    backbone=dict(
        _delete_=True,
        type='pelk_mm.PeLK',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        layer_scale_init_value=1e-6,
        mixer_norm_cfg=norm_cfg,
        gap_before_final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    decode_head=dict(
        in_channels=[124, 249, 499, 998], num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=499, num_classes=150, norm_cfg=norm_cfg))
