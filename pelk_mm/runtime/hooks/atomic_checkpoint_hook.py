"""mmengine's CheckpointHook, writing so that a crash never loses a
checkpoint."""
import glob
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook

from ...registry import HOOKS


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` with crash-safe local writes.

    mmengine's hook deletes the oldest kept checkpoint *before* writing the
    new one, writes it in place and only then points ``last_checkpoint`` at
    it: a run killed during the write (a job time limit, a full disk) is
    left with a partial newest file and, with ``max_keep_ckpts=1``, nothing
    to resume from. This hook writes ``.NAME.partial``, flushes it to disk,
    renames it into place (atomic on POSIX), then rewrites
    ``last_checkpoint`` the same way, and only then deletes the checkpoints
    that fall out of ``max_keep_ckpts``. ``save_best`` is written the same
    way, and the previous best deleted only once the new one is in place.
    Every argument is mmengine's; for non-local ``out_dir`` it behaves as
    mmengine's hook.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not isinstance(self.file_backend, LocalBackend) or \
                not is_main_process():
            return
        # What a write that died left (a full disk, a killed job): never a
        # checkpoint, and in the way of the next write of that name.
        for left in glob.glob(osp.join(self.out_dir, '.*.partial')):
            os.remove(left)
            runner.logger.info(f'removed {left}, left by a checkpoint write '
                               f'that did not finish')

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            # Recorded before saving, so that a resumed run knows which
            # checkpoints it keeps; deleted only after the new one is safe.
            # (The deque has maxlen max_keep_ckpts: pop before appending.)
            while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        partial = f'.{filename}.partial'
        runner.save_checkpoint(
            self.out_dir,
            partial,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        _replace_durably(osp.join(self.out_dir, partial), self.last_ckpt)
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        with open(pointer + '.partial', 'w') as f:
            f.write(self.last_ckpt)
        _replace_durably(pointer + '.partial', pointer)
        for old in outdated:
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isfile(path):
                os.remove(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's ``save_best``, ordered so that a crash loses nothing:
        the new best is written to ``.NAME.partial`` and renamed into place,
        and only then is the previous best deleted (mmengine deletes it
        first, then writes the new one in place)."""
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_best_checkpoint(runner, metrics)
        outdated: list = []
        save = runner.save_checkpoint

        def save_atomically(out_dir, filename, *args, **kwargs):
            if not filename.startswith('best_'):  # the step's, re-saved
                return save(out_dir, filename, *args, **kwargs)
            partial = f'.{filename}.partial'
            save(out_dir, partial, *args, **kwargs)
            if is_main_process():
                _replace_durably(
                    osp.join(out_dir, partial), osp.join(out_dir, filename))

        # The hook's own backend (mmengine makes one per hook): its deletes
        # of the previous best are held back until the new one is in place.
        self.file_backend.remove = outdated.append
        self.file_backend.rmtree = outdated.append
        runner.save_checkpoint = save_atomically
        # What a write that fails must not change: the best so far.
        hub = runner.message_hub
        best_path = getattr(self, 'best_ckpt_path', None)
        best_paths = dict(getattr(self, 'best_ckpt_path_dict', {}))
        best_info = {
            key: value
            for key, value in hub.runtime_info.items()
            if key.startswith(('best_score', 'best_ckpt'))
        }
        try:
            super()._save_best_checkpoint(runner, metrics)
        except BaseException:
            if hasattr(self, 'best_ckpt_path'):
                self.best_ckpt_path = best_path
            if hasattr(self, 'best_ckpt_path_dict'):
                self.best_ckpt_path_dict = best_paths
            for key, value in best_info.items():
                hub.update_info(key, value)
            raise
        finally:
            del self.file_backend.remove, self.file_backend.rmtree
            del runner.save_checkpoint
        current = {
            getattr(self, 'best_ckpt_path', None),
            *getattr(self, 'best_ckpt_path_dict', {}).values()
        }
        for path in outdated:
            if path in current:
                continue
            if osp.isdir(path):  # DeepSpeed's checkpoints are folders
                self.file_backend.rmtree(path)
            else:
                self.file_backend.remove(path)


def _replace_durably(source: str, target: str) -> None:
    """Flush ``source`` to disk, then rename it to ``target``."""
    with open(source, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(source, target)
    directory = os.open(osp.dirname(osp.abspath(target)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
