"""Inference latency in onnxruntime per export path, against eager PyTorch.

Usage:
    python tools/benchmark/onnxruntime_latency.py [--sizes 224 512]
        [--paths direct box_sums fft] [--repeat 5] [--threads N]

Each backbone (classification form, no head, batch 1) is exported at each
size with :func:`pelk_mm.deployment.export_onnx` and timed in one run, side
by side, on the CPU with the same number of threads for onnxruntime and
PyTorch (best of ``--repeat`` after a warm-up):

* ``pelk-t`` eager: PeLK-T re-parameterised (``switch_to_deploy()``) with
  ``path='auto'`` (what ``tools/test.py`` runs);
* ``pelk-t`` in onnxruntime, one graph per export path (``direct``: dense
  depthwise Conv of the expanded kernel; ``box_sums``: summed-area tables
  in standard ops; ``fft``: ONNX DFT);
* ``convnext-t`` (mmpretrain, 7x7 depthwise) eager and in onnxruntime.

Ratios are to eager PeLK-T at the same size. The last line names the path
that is fastest at every size (the one to make
``pelk_mm.deployment.DEFAULT_EXPORT_PATH``).
"""
import argparse
import os.path as osp
import tempfile

import torch
from mmengine.logging import MMLogger
from mmpretrain.models.backbones import ConvNeXt

from pelk_mm.deployment import EXPORT_PATHS, export_onnx, onnxruntime_session
from pelk_mm.models import PeLK
from probes import best_time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 512])
    parser.add_argument(
        '--paths', nargs='+', choices=EXPORT_PATHS, default=list(EXPORT_PATHS))
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logger = MMLogger.get_instance('pelk_mm', log_level='INFO')
    torch.manual_seed(0)
    pelk = PeLK('tiny').eval()
    pelk.switch_to_deploy()
    convnext = ConvNeXt(arch='tiny')
    convnext.eval()  # (its train() returns None)

    def eager(model, x):
        with torch.no_grad():
            return best_time(lambda: model(x), args.repeat)

    def onnxruntime(model, x, path, folder):
        file = export_onnx(model, x, osp.join(folder, f'{path}.onnx'), path)
        session = onnxruntime_session(file)
        feed = {session.get_inputs()[0].name: x.numpy()}
        return best_time(lambda: session.run(None, feed), args.repeat)

    rows = [
        f'batch 1, fp32, CPU, {torch.get_num_threads()} threads for '
        f'PyTorch and onnxruntime, best of {args.repeat}'
    ]
    fastest = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            x = torch.randn(1, 3, size, size)
            times = {'pelk-t eager (auto)': eager(pelk, x)}
            exported = {}
            for path in args.paths:
                exported[path] = onnxruntime(pelk, x, path, folder)
                times[f'pelk-t onnxruntime {path}'] = exported[path]
            times['convnext-t eager'] = eager(convnext, x)
            times['convnext-t onnxruntime'] = onnxruntime(
                convnext, x, 'direct', folder)
            fastest[size] = min(exported, key=exported.get)
            base = times['pelk-t eager (auto)']
            rows.append(f'{size}x{size}:')
            for name, seconds in times.items():
                rows.append(f'  {name:>26} {seconds * 1e3:>9.1f} ms '
                            f'{seconds / base:>5.2f}x pelk-t eager')
    rows.append('fastest export path in onnxruntime: ' +
                ', '.join(f'{path} at {size}'
                          for size, path in fastest.items()))
    logger.info('\n'.join(rows))


if __name__ == '__main__':
    main()
