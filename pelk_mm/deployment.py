"""ONNX export of models with peripheral convolutions, and its check in
onnxruntime.

What a peripheral conv becomes in the exported graph is the *path* it is
exported with (:mod:`pelk_mm.ops.paths`; every ``'auto'`` conv takes it
while exporting), one of those that traced graphs may hold
(:data:`EXPORT_PATHS`):

* ``'direct'``: the block weights expanded to the dense K x K kernel (a
  ``Gather`` of constant indices) and one depthwise ``Conv``;
* ``'box_sums'``: the summed-area-table algorithm in standard ops
  (``CumSum``, ``Gather`` with indices built from the map size, a
  ``MatMul`` of the k' x (k' + 1) mixed block weights): about k'^2 + 4k'
  operations per pixel;
* ``'fft'``: ONNX's ``DFT``. Its padded lengths are chosen from the map
  size at export, so it takes static shapes only.

:data:`DEFAULT_EXPORT_PATH` is the fastest in onnxruntime on PeLK-T at 224
and 512 (``tools/benchmark/onnxruntime_latency.py``); the others are
options. Graphs are made by torch's dynamo-based exporter
(``torch.onnx.export(..., dynamo=True)``, opset 18), which every path
passes; the TorchScript-based one has no FFT, and is what torch < 2.5 gets
(opset 17; ``'box_sums'`` and ``'direct'`` export through it).
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

from .ops import forced_path, paths
from .ops.torch_features import has
from .runtime import (load_fitting, read_checkpoint, state_dict_of,
                      with_umask_mode, without_wrapper_prefix)

#: The paths an exported graph may hold (those of standard ops).
EXPORT_PATHS = tuple(name for name, path in paths.REGISTRY.items()
                     if path.traceable)
#: Measured with tools/benchmark/onnxruntime_latency.py (README).
DEFAULT_EXPORT_PATH = 'box_sums'
#: The opset of the dynamo exporter's graphs, and the newest the TorchScript
#: exporter (torch < 2.5) writes.
OPSET = 18
TORCHSCRIPT_OPSET = 17

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
        checkpoint (str): A checkpoint's path or URL (read with the plugin's
            safe loading).

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
    loaded = read_checkpoint(checkpoint, 'cpu')
    state = without_wrapper_prefix(state_dict_of(loaded))
    deployed = bool(cfg.model.get('backbone', {}).get('deploy', False))
    hint = ('a re-parameterised checkpoint needs --cfg-options '
            'model.backbone.deploy=True' if not deployed else
            'without model.backbone.deploy=True the config builds the '
            'trained form, which a checkpoint from training fits')
    load_fitting(
        model,
        state,
        checkpoint,
        f'the model of {cfg.filename}',
        hint=f'Give the config it was trained with ({hint})',
        shape_hint='Give the config it was trained with')
    model.eval()
    return model, loaded


def export_path(name: str) -> str:
    """``name`` if it is an export path this torch can write.

    Raises:
        ValueError: If it names no export path.
    """
    if name not in EXPORT_PATHS:
        raise ValueError(f'export path must be one of {EXPORT_PATHS}, got '
                         f'{name!r}')
    if name == 'fft' and not has('dynamo_onnx'):
        raise ValueError(
            "the 'fft' path exports ONNX's DFT through torch's dynamo "
            f'exporter, which torch {torch.__version__} lacks (torch >= '
            "2.5); choose 'box_sums' or 'direct'")
    return name


def export_onnx(model: nn.Module,
                inputs: torch.Tensor,
                file: str,
                path: str = DEFAULT_EXPORT_PATH,
                dynamic: bool = False,
                output_names: Optional[Sequence[str]] = None) -> str:
    """Export ``model(inputs)`` (one image batch in, tensors out) to ONNX.

    The model is put in eval mode; its ``'auto'`` peripheral convs take
    ``path`` while exporting (the model is left as it was); with
    ``dynamic``, a copy of it whose adaptive average pools compute
    their bins from the map size is exported
    (:func:`with_exportable_pooling`).
    The file is written next to ``file`` and moved over it only once the
    export has succeeded and ``onnx.checker`` accepts it, so a failed export
    leaves an existing file as it was.

    Args:
        model (nn.Module): The model; its forward takes (B, 3, H, W).
        inputs (Tensor): An example input.
        file (str): Where to write the ``.onnx`` file.
        path (str): One of :data:`EXPORT_PATHS` (module docstring).
            Defaults to :data:`DEFAULT_EXPORT_PATH`.
        dynamic (bool): Make batch, height and width dynamic axes (not with
            ``'fft'``). Defaults to False.
        output_names (Sequence[str], optional): Names of the outputs.

    Returns:
        str: ``file``.

    Raises:
        ValueError: If ``path`` is no export path, or ``dynamic`` is asked
            of ``'fft'``.
        ImportError: If onnx is not installed.
    """
    onnx = require('onnx')
    dynamo = has('dynamo_onnx')
    if dynamo:
        require('onnxscript')
    if dynamic and path == 'fft':
        raise ValueError(
            "the 'fft' path pads every map to FFT lengths chosen from its "
            "size at export, so its graph takes that input size only; "
            "export it without dynamic axes, or choose 'direct' or "
            "'box_sums'")
    path = export_path(path)
    model.eval()
    options = dict(
        input_names=['inputs'],
        output_names=list(output_names) if output_names else None,
        verbose=False)
    if dynamic:
        model = with_exportable_pooling(model)
    if dynamic and dynamo:
        # DYNAMIC, not AUTO: where the traced Python code fixes one of
        # these sizes, torch.export raises instead of exporting for the
        # example's size. Constants that an op's decomposition computes
        # from the size (adaptive pooling's bins) it does not see: hence
        # with_exportable_pooling.
        dim = torch.export.Dim.DYNAMIC
        options['dynamic_shapes'] = ({0: dim, 2: dim, 3: dim}, )
        if inputs.shape[0] == 1:
            # torch.export treats a size-1 example axis as the constant 1.
            inputs = inputs.expand(2, -1, -1, -1).contiguous()
    elif dynamic:
        options['dynamic_axes'] = {
            'inputs': {
                0: 'batch',
                2: 'height',
                3: 'width'
            }
        }
    if dynamo:
        options.update(dynamo=True, opset_version=OPSET, external_data=False)
    else:  # torch < 2.5: the TorchScript exporter, whose newest opset is 17
        options.update(opset_version=TORCHSCRIPT_OPSET)
    folder = osp.dirname(osp.abspath(file))
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(
        prefix='.' + osp.basename(file) + '.', suffix='.partial', dir=folder)
    os.close(handle)
    try:
        with torch.no_grad(), forced_path(path):
            torch.onnx.export(model, (inputs, ), partial, **options)
        onnx.checker.check_model(partial)
        with_umask_mode(partial)
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
