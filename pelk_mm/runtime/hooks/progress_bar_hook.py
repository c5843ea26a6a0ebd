"""A progress bar over training, validation and test iterations."""
import sys
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.utils import ProgressBar

from ...registry import HOOKS


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """Draw mmengine's :class:`ProgressBar` for each loop (main process).

    Use it in a config with
    ``custom_hooks = [dict(type='pelk_mm.ProgressBarHook')]``. It complements
    the logger hook, whose lines come every ``interval`` iterations.
    """
    priority = 'VERY_LOW'

    def __init__(self):
        self._bar: Optional[ProgressBar] = None
        self._train_bar: Optional[ProgressBar] = None  # while validating

    def _start(self, total: int) -> None:
        if is_main_process():  # sys.stdout as it is now, not at import
            self._bar = ProgressBar(total, file=sys.stdout)

    def _step(self, *args, **kwargs) -> None:
        if self._bar is not None:
            self._bar.update()

    def _stop(self, *args, **kwargs) -> None:
        if self._bar is not None:
            self._bar.file.write('\n')
            self._bar = None

    def before_train(self, runner) -> None:
        self._start(runner.max_iters - runner.iter)

    def before_val_epoch(self, runner) -> None:
        self._train_bar, self._bar = self._bar, None
        self._start(len(runner.val_dataloader))

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._stop()
        self._bar, self._train_bar = self._train_bar, None

    def before_test_epoch(self, runner) -> None:
        self._start(len(runner.test_dataloader))

    after_train_iter = after_val_iter = after_test_iter = _step
    after_train = after_test_epoch = _stop
