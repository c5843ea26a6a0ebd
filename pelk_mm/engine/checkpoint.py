"""Converting checkpoints: the backbone of a classifier checkpoint."""
from ..runtime import state_dict_of


def extract_backbone(checkpoint: dict, raw: bool = False) -> dict:
    """The backbone weights of a classifier checkpoint, keys ``backbone.*``.

    With mmengine's ``EMAHook``, a checkpoint's ``state_dict`` holds the
    averaged (EMA) weights, meant for deployment, and ``ema_state_dict`` the
    raw ones (keys ``module.*``). Weights under SLaK's dynamic sparsity are
    multiplied by the masks saved with them (``checkpoint['sparsity']``), so
    the output is exactly as sparse as the trained model.

    Args:
        checkpoint (dict): As saved by mmengine / mmpretrain.
        raw (bool): Take the raw weights instead of the EMA ones (only for
            checkpoints written with EMAHook). Defaults to False.

    Returns:
        dict: ``{'backbone.<name>': tensor}``, loadable with
        ``init_cfg=dict(type='Pretrained', prefix='backbone.')``.

    Raises:
        KeyError: If the checkpoint has no such weights.
    """
    if raw:
        if 'ema_state_dict' not in checkpoint:
            raise KeyError('the checkpoint was not written with EMAHook (no '
                           'ema_state_dict): its state_dict already holds '
                           'the raw weights; convert without --raw')
        state = {
            k[len('module.'):]: v
            for k, v in checkpoint['ema_state_dict'].items()
            if k.startswith('module.')
        }
    else:
        state = state_dict_of(checkpoint)
    backbone = {k: v for k, v in state.items() if k.startswith('backbone.')}
    if not backbone:
        raise KeyError(
            f'no backbone.* weights in the checkpoint (its keys look like '
            f'{sorted(state)[:3]}); is it a classifier checkpoint?')
    masks = checkpoint.get('sparsity', {}).get('masks', {})
    for name, mask in masks.items():
        if name in backbone:
            backbone[name] = backbone[name] * mask.to(backbone[name].dtype)
    return backbone
