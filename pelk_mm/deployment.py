"""ONNX export of models with peripheral convolutions, and its check in
onnxruntime.

What a peripheral conv becomes in the exported graph is its *conv form*
(the ``path`` of :class:`~pelk_mm.ops.PeripheralConv2d` while exporting):

* ``'direct'``: the block weights expanded to the dense K x K kernel (a
  ``Gather`` of constant indices) and one depthwise ``Conv``;
* ``'sat'``: the summed-area-table algorithm in standard ops
  (:func:`~pelk_mm.ops.grid_depthwise_conv_box_sums`: ``CumSum``, ``Gather``
  with indices built from the map size, a ``MatMul`` of the k' x (k' + 1)
  mixed block weights): about k'^2 + 4k' operations per pixel;
* ``'fft'``: ONNX's ``DFT``. Its padded lengths are chosen from the map
  size at export, so it takes static shapes only.

:data:`DEFAULT_CONV_FORM` is the fastest in onnxruntime on PeLK-T at 224
and 512 (``tools/benchmark/onnxruntime_latency.py``); the others are
options. Graphs are made by torch's dynamo-based exporter
(``torch.onnx.export(..., dynamo=True)``, opset 18), which every form
passes; the TorchScript-based one has no FFT.
"""
import copy
import os
import os.path as osp
import tempfile
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from .engine import CheckpointMismatchError, load_from_local
from .ops import PeripheralConv2d

CONV_FORMS = ('direct', 'sat', 'fft')
#: Measured with tools/benchmark/onnxruntime_latency.py (README).
DEFAULT_CONV_FORM = 'sat'
OPSET = 18

_ONNX_HINT = ('ONNX export needs onnx, onnxscript and onnxruntime; make '
              'install installs them, or pip install onnx==1.23.2 '
              'onnxscript==0.7.2 onnxruntime==1.32.0 (the versions README '
              'lists)')


def require(module: str):
    """Import ``onnx``, ``onnxscript`` or ``onnxruntime``, or say how to
    install it.

    Raises:
        ImportError: Naming the missing package and the install command.
    """
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f'{module} is not installed: {_ONNX_HINT}') \
            from error


class AdaptiveAvgPool2dFromSizes(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as prefix sums and gathers whose bin edges
    are computed from the map size in the graph.

    torch 2.12's exporter writes ``adaptive_avg_pool2d`` (UperNet's pyramid
    pooling) with the example's bins as constants, so a graph with dynamic
    height and width pools every other size wrongly (measured: 28% off at
    96x160 when exported at 64x96). Bin ``i`` of ``n`` positions into ``s``
    covers ``[floor(i n / s), ceil((i + 1) n / s))``, as in PyTorch.
    """

    def __init__(self, pool: nn.AdaptiveAvgPool2d):
        super().__init__()
        size = pool.output_size
        self.output_size = (size, size) if isinstance(size, int) else size
        if None in self.output_size:
            raise ValueError(f'{pool}: an output size of None (the input '
                             f'size) has no bins to compute')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dim, bins in zip((-2, -1), self.output_size):
            length = x.shape[dim]
            index = torch.arange(bins, device=x.device)
            start = index * length // bins
            end = ((index + 1) * length + bins - 1) // bins
            sums = x.cumsum(dim)
            sums = torch.cat([torch.zeros_like(sums.narrow(dim, 0, 1)), sums],
                             dim)
            pooled = sums.index_select(dim, end) - \
                sums.index_select(dim, start)
            shape = [-1, 1] if dim == -2 else [-1]
            x = pooled / (end - start).to(x.dtype).view(shape)
        return x


def with_exportable_pooling(module: nn.Module) -> nn.Module:
    """``module``, or where it has adaptive average pools, a copy whose
    pools compute their bins in the graph
    (:class:`AdaptiveAvgPool2dFromSizes`)."""
    if not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in module.modules()):
        return module
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(parent, name, AdaptiveAvgPool2dFromSizes(child))
    return module


def load_model(cfg: Config, checkpoint: str) -> tuple:
    """Build the model of ``cfg`` and load ``checkpoint`` into it, strictly.

    The backbone's ``init_cfg`` is dropped (the checkpoint gives every
    weight). Build the re-parameterised form with
    ``model.backbone.deploy=True`` in ``cfg`` for a checkpoint written by
    ``tools/model_converters/reparameterize.py``.

    Args:
        cfg (Config): A classifier, segmentor or detector config.
        checkpoint (str): A local checkpoint (read with the plugin's safe
            loading).

    Returns:
        tuple: The model (CPU, eval mode) and the checkpoint dict.

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        RuntimeError: If it cannot be read.
        CheckpointMismatchError: If its keys or shapes do not fit the model
            (naming examples, and the deploy switch when that is the cause).
    """
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    loaded = load_from_local(checkpoint, 'cpu')
    state = loaded.get('state_dict', loaded)
    state = {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in state.items()
    }
    deployed = bool(cfg.model.get('backbone', {}).get('deploy', False))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes
        shapes = '; '.join(line.strip().rstrip('.')
                           for line in str(error).splitlines()[1:4])
        raise CheckpointMismatchError(
            f'{checkpoint} does not fit the model of {cfg.filename}: shapes '
            f'differ: {shapes}. Give the config it was trained with') \
            from None
    if result.missing_keys or result.unexpected_keys:
        hint = ('a re-parameterised checkpoint needs --cfg-options '
                'model.backbone.deploy=True' if not deployed else
                'without model.backbone.deploy=True the config builds the '
                'trained form, which a checkpoint from training fits')
        raise CheckpointMismatchError(
            f'{checkpoint} does not fit the model of {cfg.filename}: '
            f'{len(result.missing_keys)} weights missing (e.g. '
            f'{result.missing_keys[:3]}), {len(result.unexpected_keys)} '
            f'unexpected (e.g. {result.unexpected_keys[:3]}). Give the '
            f'config it was trained with ({hint})')
    model.eval()
    return model, loaded


def set_conv_form(model: nn.Module, form: str) -> int:
    """Make every peripheral conv of ``model`` take ``form``.

    Returns:
        int: How many peripheral convs there are.
    """
    if form not in CONV_FORMS:
        raise ValueError(f'conv form must be one of {CONV_FORMS}, got '
                         f'{form!r}')
    convs = [m for m in model.modules() if isinstance(m, PeripheralConv2d)]
    for conv in convs:
        conv.path = form
    return len(convs)


def export_onnx(model: nn.Module,
                inputs: torch.Tensor,
                file: str,
                conv_form: str = DEFAULT_CONV_FORM,
                dynamic: bool = False,
                output_names: Optional[Sequence[str]] = None) -> str:
    """Export ``model(inputs)`` (one image batch in, tensors out) to ONNX.

    The model is put in eval mode and its peripheral convs in ``conv_form``;
    with ``dynamic``, a copy of it whose adaptive average pools compute
    their bins from the map size is exported
    (:func:`with_exportable_pooling`).
    The file is written next to ``file`` and moved over it only once the
    export has succeeded and ``onnx.checker`` accepts it, so a failed export
    leaves an existing file as it was.

    Args:
        model (nn.Module): The model; its forward takes (B, 3, H, W).
        inputs (Tensor): An example input.
        file (str): Where to write the ``.onnx`` file.
        conv_form (str): ``'direct'``, ``'sat'`` or ``'fft'`` (module
            docstring). Defaults to :data:`DEFAULT_CONV_FORM`.
        dynamic (bool): Make batch, height and width dynamic axes (not with
            ``'fft'``). Defaults to False.
        output_names (Sequence[str], optional): Names of the outputs.

    Returns:
        str: ``file``.

    Raises:
        ValueError: If ``dynamic`` is asked of the FFT form.
        ImportError: If onnx is not installed.
    """
    onnx = require('onnx')
    require('onnxscript')
    if dynamic and conv_form == 'fft':
        raise ValueError(
            "the 'fft' conv form pads every map to FFT lengths chosen from "
            "its size at export, so its graph takes that input size only; "
            "export it without dynamic axes, or choose 'direct' or 'sat'")
    model.eval()
    set_conv_form(model, conv_form)
    dynamic_shapes = None
    if dynamic:
        model = with_exportable_pooling(model)
        # DYNAMIC, not AUTO: where the traced Python code fixes one of
        # these sizes, torch.export raises instead of exporting for the
        # example's size. Constants that an op's decomposition computes
        # from the size (adaptive pooling's bins) it does not see: hence
        # with_exportable_pooling.
        dim = torch.export.Dim.DYNAMIC
        dynamic_shapes = ({0: dim, 2: dim, 3: dim}, )
        if inputs.shape[0] == 1:
            # torch.export treats a size-1 example axis as the constant 1.
            inputs = inputs.expand(2, -1, -1, -1).contiguous()
    folder = osp.dirname(osp.abspath(file))
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(
        prefix='.' + osp.basename(file) + '.', suffix='.partial', dir=folder)
    os.close(handle)
    try:
        with torch.no_grad():
            torch.onnx.export(
                model, (inputs, ),
                partial,
                dynamo=True,
                opset_version=OPSET,
                input_names=['inputs'],
                output_names=list(output_names) if output_names else None,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False)
        onnx.checker.check_model(partial)
        os.replace(partial, file)
    finally:
        if osp.exists(partial):
            os.remove(partial)
    return file


def onnxruntime_session(file: str, threads: Optional[int] = None):
    """An onnxruntime CPU session of ``file`` (``threads`` intra-op
    threads; default: as many as torch uses)."""
    ort = require('onnxruntime')
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(
        file, options, providers=['CPUExecutionProvider'])


def compare_with_pytorch(file: str, model: nn.Module,
                         inputs: torch.Tensor) -> Dict[str, Dict[str, float]]:
    """Run ``file`` in onnxruntime and ``model`` in PyTorch on ``inputs``.

    Returns:
        dict: Per output name, ``max_abs`` (largest absolute difference)
        and ``max_rel`` (that, over the largest absolute PyTorch value).

    Raises:
        ValueError: If the two give different numbers or shapes of outputs.
    """
    session = onnxruntime_session(file)
    outputs = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    with torch.no_grad():
        expected = model(inputs)
    if isinstance(expected, torch.Tensor):
        expected = (expected, )
    expected = [t.detach().float().numpy() for t in expected]
    if len(outputs) != len(expected):
        raise ValueError(f'{file} gives {len(outputs)} outputs, the model '
                         f'{len(expected)}')
    errors = {}
    for meta, got, want in zip(session.get_outputs(), outputs, expected):
        if got.shape != want.shape:
            raise ValueError(f'output {meta.name} of {file} has shape '
                             f'{got.shape}, the model gives {want.shape}')
        max_abs = float(np.abs(got - want).max())
        errors[meta.name] = dict(
            max_abs=max_abs,
            max_rel=max_abs / max(float(np.abs(want).max()), 1e-12))
    return errors
