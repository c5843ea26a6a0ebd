"""pelk_mm's setup (metadata in setup.cfg).

Like OpenMMLab's packages, it ships its configs, tools and model index
inside the package, under ``pelk_mm/.mim/`` (links into the source tree
for an editable install, copies in a wheel), so that ``import pelk_mm`` can register its
ImageNet models with mmpretrain's ModelHub wherever it is installed, and
``mim train/test/run pelk_mm ...`` find the tools.
"""
import os
import os.path as osp
import shutil

from setuptools import setup

ROOT = osp.dirname(osp.abspath(__file__))
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def add_mim_extension() -> None:
    """Link (or, where links fail, copy) ``MIM_FILES`` into
    ``pelk_mm/.mim``."""
    mim = osp.join(ROOT, 'pelk_mm', '.mim')
    os.makedirs(mim, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(ROOT, name), osp.join(mim, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        try:
            os.symlink(osp.relpath(src, mim), dst)
        except OSError:
            (shutil.copytree if osp.isdir(src) else shutil.copyfile)(src, dst)


add_mim_extension()
setup()
