"""Save the random number generators with each checkpoint, restore them on
resume."""
import random
import warnings
from typing import Optional

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from ...registry import HOOKS


def _capture() -> dict:
    state = dict(
        torch=torch.get_rng_state(),
        numpy=np.random.get_state(),
        random=random.getstate())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _restore(state: dict) -> None:
    torch.set_rng_state(state['torch'])
    np.random.set_state(state['numpy'])
    random.setstate(state['random'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Make a resumed run draw the random numbers the uninterrupted one draws.

    mmengine's checkpoints hold the seed but not the generators' states, so
    a seeded, deterministic run resumed from iteration ``i`` re-seeds and
    draws different drop-path and dropout masks from then on than the same
    run not interrupted (close, not equal, losses). This hook adds the states
    of torch's (CPU and, if in use, CUDA), numpy's and Python's generators to
    each checkpoint (``checkpoint['rng_states']``) and puts them back when
    training resumes, after every other ``before_train`` hook (priority
    ``LOWEST``). Loading a checkpoint with ``load_from`` (not resuming)
    restores nothing.

    Distributed runs: mmengine saves checkpoints on rank 0 only, so the
    states saved are rank 0's, and every rank gets them back. That is exact
    with mmengine's default ``randomness.diff_rank_seed=False``, where all
    ranks are seeded alike and draw alike; with ``diff_rank_seed=True`` only
    rank 0 is restored and the others go on from their re-seeded state (a
    warning says so).

    What it does not cover: with ``num_workers=0`` the data transforms draw
    from the main process's generators, and mmengine replays the batches
    before the resumed iteration, so those draws repeat after the restore.
    With worker processes (every pelk_mm config), the workers' generators
    are seeded by mmengine and replayed with the batches, and resuming
    reproduces the uninterrupted run. Every config of pelk_mm sets this
    hook in ``default_hooks``.
    """
    priority = 'LOWEST'

    def __init__(self):
        self._resumed: Optional[tuple] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_states'] = _capture()  # rank 0: the one that saves

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Kept until before_train: mmengine may still re-seed after loading
        # (a seed in the checkpoint unlike the config's).
        meta = checkpoint.get('meta', {})
        self._resumed = (checkpoint.get('rng_states'), meta.get('epoch'),
                         meta.get('iter'))

    def before_train(self, runner) -> None:
        if self._resumed is None:
            return
        states, epoch, iteration = self._resumed
        self._resumed = None
        resuming = (runner.iter, runner.epoch) == (iteration, epoch) and (
            runner.iter > 0 or runner.epoch > 0)
        if not resuming:
            return  # load_from: weights only, the run starts afresh
        if not states:
            warnings.warn(
                'the checkpoint resumed from holds no random number '
                'generator states (written without pelk_mm.RandomStateHook):'
                ' the run goes on re-seeded, not exactly as uninterrupted')
            return
        randomness = runner.cfg.get('randomness') or {}
        if get_rank() > 0 and randomness.get('diff_rank_seed', False):
            warnings.warn(
                f'rank {get_rank()} keeps its re-seeded random number '
                f'generators: with diff_rank_seed=True only rank 0\'s states '
                f'are in the checkpoint')
            return
        _restore(states)
