"""SLaK's dynamic sparsity as an mmengine hook (PeLK trains with it).

Every conv and linear weight (as SLaK; the peripheral block weights too, see
:mod:`pelk_mm.models.sparsity`) of the chosen part of
the model (default: all of it, the classification head included) gets a
binary mask. The masks start from one of:

* ``'snip'`` (SLaK's): SNIP scores ``|w * dL/dw|`` on one training batch,
  one threshold over all layers keeping ``1 - sparsity`` of the weights,
  give each layer its density; the layer's kept weights are then placed at
  random (SLaK re-samples the positions; we draw exactly the count the
  density gives, so the overall density is exact);
* ``'random'`` / ``'magnitude'``: ``1 - sparsity`` of every layer, at random
  or the largest weights;
* ``'nonzero'``: the non-zero weights of what was loaded (SLaK's downstream
  backbones, built ``sparse=True``, keep the ImageNet zeros this way). A
  dense file leaves the model dense, with a warning.

Layers that come out at least 99% dense are left unmasked (as SLaK). After
every optimizer step masked weights (and their optimizer moments) are
zeroed, and every ``update_interval`` iterations each layer drops its
``prune_rate`` smallest-magnitude active weights and regrows as many at
random inactive positions (at zero), so every layer keeps its density while
the topology moves. The prune rate anneals with a cosine to 0 at the end of
training (SLaK's default); ``prune_rate=0`` keeps the masks fixed.

Masks are kept by the hook, saved in the checkpoint under ``'sparsity'``
and restored on resume or ``load_from`` when they fit the model (else they
are recomputed, with a warning); on several processes rank 0 decides and
broadcasts, so every replica holds the same masks.
"""
import logging
from typing import Dict, Optional

import torch
import torch.nn as nn
from mmengine.dist import broadcast
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ...models.sparsity import sparse_weights
from ...registry import HOOKS
from .. import sparse_masks


@HOOKS.register_module()
class DynamicSparsityHook(Hook):
    """Dynamic sparse training (prune and regrow), as in SLaK.

    Args:
        sparsity (float): Fraction of zero weights over all masked layers.
            Defaults to 0.4 (the paper's).
        sparse_init (str): ``'snip'``, ``'random'``, ``'magnitude'`` or
            ``'nonzero'`` (see the module docstring). Defaults to 'snip'.
        growth (str): How pruned weights come back; only ``'random'``
            (the paper's). Defaults to 'random'.
        prune_rate (float): Fraction of each layer's active weights pruned
            and regrown at an update, annealed with a cosine; 0 keeps the
            masks fixed. Defaults to 0.5 (PeLK-T; 0.3 for S and B).
        update_interval (int): Iterations between updates. Defaults to 2000
            (PeLK-T; 100 for S and B).
        prefix (str): Only parameters whose name starts with it are masked,
            e.g. ``'backbone.'`` for a detector. Defaults to '' (all).
        seed (int): Seed of the random choices. Defaults to 0.
    """
    # After the optimizer step (train_step), before EMAHook (ABOVE_NORMAL)
    # averages the weights, so that it averages masked weights.
    priority = 'HIGH'
    SPARSE_INITS = ('snip', 'random', 'magnitude', 'nonzero')

    def __init__(self,
                 sparsity: float = 0.4,
                 sparse_init: str = 'snip',
                 growth: str = 'random',
                 prune_rate: float = 0.5,
                 update_interval: int = 2000,
                 prefix: str = '',
                 seed: int = 0):
        if not 0 < sparsity < 1:
            raise ValueError(f'sparsity must be in (0, 1), got {sparsity}')
        if sparse_init not in self.SPARSE_INITS:
            raise ValueError(f'sparse_init must be one of '
                             f'{self.SPARSE_INITS}, got {sparse_init!r}')
        if growth != 'random':
            raise ValueError(f"only growth='random' is implemented (the "
                             f"paper's), got {growth!r}")
        if not 0 <= prune_rate < 1:
            raise ValueError(f'prune_rate must be in [0, 1), got '
                             f'{prune_rate}')
        self.sparsity = sparsity
        self.sparse_init = sparse_init
        self.prune_rate = prune_rate
        self.update_interval = update_interval
        self.prefix = prefix
        self.generator = torch.Generator().manual_seed(seed)
        self.masks: Dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _model(runner) -> nn.Module:
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _params(self, runner) -> Dict[str, nn.Parameter]:
        return sparse_weights(self._model(runner), self.prefix)

    def _sync(self) -> None:
        for mask in self.masks.values():
            broadcast(mask, src=0)

    def apply_masks(self, runner) -> None:
        """Zero the masked weights (and their optimizer moments)."""
        sparse_masks.apply_masks(
            self._params(runner), self.masks,
            runner.optim_wrapper.optimizer.state)

    # --------------------------------------------------------- init masks
    def _init_masks(self, runner) -> None:
        params = self._params(runner)
        if self.sparse_init == 'nonzero':
            chosen = sparse_masks.nonzero_masks(params)
            loaded = sparse_masks.density(chosen)
            if loaded >= sparse_masks.DENSE_LAYER:
                print_log(
                    f'dynamic sparsity: the weights under {self.prefix!r} '
                    f'are dense ({loaded:.1%} non-zero), so '
                    f'they are trained dense, and the sparse parameter and '
                    f'FLOP counts of the paper describe another model. Load '
                    f'a sparse checkpoint (an ImageNet model trained with '
                    f'this hook) to keep its sparsity.',
                    logger='current',
                    level=logging.WARNING)
                self.masks = {}
                return
        else:
            if self.sparse_init == 'snip':
                counts = sparse_masks.snip_keep_counts(
                    self._snip_scores(runner, params), self.sparsity)
            else:
                counts = sparse_masks.uniform_keep_counts(
                    params, self.sparsity)
            # SNIP's kept weights are placed at random (SLaK re-samples
            # the positions), exactly the count its density gives.
            by = 'magnitude' if self.sparse_init == 'magnitude' else 'random'
            chosen = sparse_masks.place_masks(params, counts, by,
                                              self.generator)
        self.masks = {
            n: keep.to(params[n].dtype).to(params[n].device)
            for n, keep in sparse_masks.without_dense_layers(chosen).items()
        }
        self._sync()
        total = sum(p.numel() for p in params.values())
        zeros = sum(int((m == 0).sum()) for m in self.masks.values())
        print_log(
            f'dynamic sparsity: {len(self.masks)} of {len(params)} '
            f'weights masked, {zeros / max(total, 1):.1%} sparse '
            f'({self.sparse_init} init)',
            logger='current')

    def _snip_scores(self, runner, params) -> Dict[str, torch.Tensor]:
        """|w * dL/dw| on one training batch (SNIP)."""
        model = self._model(runner)  # unwrapped: no DDP gradient sync
        data = model.data_preprocessor(
            next(iter(runner.train_dataloader)), True)
        losses = model(**data, mode='loss') if isinstance(data, dict) else \
            model(*data, mode='loss')
        loss, _ = model.parse_losses(losses)
        grads = torch.autograd.grad(
            loss, list(params.values()), allow_unused=True)
        return sparse_masks.snip_scores(params, dict(zip(params, grads)))

    # ------------------------------------------------------------- update
    def current_prune_rate(self, runner) -> float:
        """Cosine-annealed prune rate at the current iteration."""
        return sparse_masks.cosine_prune_rate(
            self.prune_rate, runner.iter / max(runner.max_iters, 1))

    def update_masks(self, runner, rate: Optional[float] = None) -> None:
        """Prune the smallest active weights, regrow as many at random.

        Args:
            runner: The runner.
            rate (float, optional): Fraction of each layer's active weights
                to move; defaults to the annealed prune rate now.
        """
        if rate is None:
            rate = self.current_prune_rate(runner)
        params = self._params(runner)
        for name, mask in self.masks.items():
            sparse_masks.prune_and_regrow(params[name], mask, rate,
                                          self.generator)
        self._sync()
        self.apply_masks(runner)

    # -------------------------------------------------------------- hooks
    def before_train(self, runner) -> None:
        if not self.masks:  # not restored by a resume
            self._init_masks(runner)
        self.apply_masks(runner)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if self.every_n_train_iters(runner, self.update_interval) and \
                runner.iter + 1 < runner.max_iters:
            self.update_masks(runner)
        else:
            self.apply_masks(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['sparsity'] = dict(
            masks={
                n: m.bool().cpu()
                for n, m in self.masks.items()
            },
            sparsity=self.sparsity,
            generator=self.generator.get_state())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('sparsity')
        if state is None:
            return
        params = self._params(runner)
        saved = state['masks']
        misfits = [
            n for n, m in saved.items()
            if n not in params or m.shape != params[n].shape
        ]
        if misfits:
            print_log(
                f'dynamic sparsity: {len(misfits)} of the {len(saved)} masks '
                f'in the checkpoint do not fit this model (e.g. {misfits[0]}: '
                f'another arch or kernel size), so the masks are computed '
                f'again ({self.sparse_init} init)',
                logger='current',
                level=logging.WARNING)
            self.masks = {}
            return
        self.masks = {
            n: m.to(params[n].dtype).to(params[n].device)
            for n, m in saved.items()
        }
        self.generator.set_state(state['generator'])
