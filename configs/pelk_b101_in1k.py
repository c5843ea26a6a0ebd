# PeLK-B-101 at 224: kernels [101, 69, 67, 13] with a 7x7 dense centre,
# trained from scratch for 300 epochs with the PeLK-B recipe. The paper
# reports PeLK-B-101 at 384 only; this is the 224 model its 384 fine-tuning
# (pelk_b101_in1k-384.py) starts from, so that the 101x101 kernels, their
# masks and their positional embedding are trained as such (a PeLK-B
# checkpoint padded to 101 would carry a ring of exact zeros there).
_base_ = './pelk_b_in1k.py'
model = dict(backbone=dict(arch='base-101'))
