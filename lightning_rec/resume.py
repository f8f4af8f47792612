"""Resuming a killed run where it stopped, so that it ends as the uninterrupted run would.

Lightning restores the weights, optimiser and loop counters from `--ckpt_path`; what it does not
restore is randomness and the position inside an epoch. Two pieces close that gap:

- `ShuffledLoader`: the training order and any randomness of the data pipeline (the meta stage's
  task sampling) are functions of (seed, epoch, batch), drawn apart from the training RNG, so a
  resumed run sees the same batches and skips the ones a mid-epoch checkpoint had already trained on.
- `RandomState` (on every CLI Trainer): checkpoints carry the global RNGs and the stage's own
  generators (`random_generators()`: a policy's sampling, a simulator's dice) and a resumed run
  restores them when training starts; validation during fit runs on a copy of them, so how often a
  run validates never changes what it trains on.

A resumed run is bit-identical on one process. Under DDP the checkpoint holds the first process's
RNGs, and every process resumes with them.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from itertools import count

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers, unrelated for neighbouring inputs (seed 1 epoch 0 vs seed 0 epoch 1)."""
    return int(np.random.SeedSequence([p % 2**63 for p in parts]).generate_state(1, np.uint64)[0] >> 1)


@contextmanager
def seeded_torch(seed: int):
    """Run a block on torch's CPU RNG seeded with `seed`, leaving the caller's RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class EpochShuffle(Sampler[int]):
    """A random order of `size` indices that depends on (seed, epoch) only; Lightning calls `set_epoch`."""

    def __init__(self, size: int, seed: int, epoch: int = 0):
        self.size, self.seed, self.epoch = size, seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        yield from torch.randperm(self.size, generator=generator).tolist()


class ShuffledLoader(DataLoader):
    """A shuffled training DataLoader whose batches are a function of (seed, epoch, batch index):
    each batch is fetched on torch's RNG seeded from those three, never from the training RNG, and
    the first `skip` batches of the first epoch it plays are dropped (a resumed mid-epoch run).
    Under DDP Lightning replaces the sampler by a DistributedSampler, whose `epoch` is read the same way."""

    def __init__(self, dataset, *args, seed: int = 0, epoch: int = 0, skip: int = 0, **kwargs):
        kwargs.setdefault("sampler", EpochShuffle(len(dataset), seed, epoch))
        super().__init__(dataset, *args, **kwargs)
        self.seed, self.epoch, self.skip = seed, epoch, skip

    def __iter__(self):
        epoch = getattr(self.sampler, "epoch", self.epoch)
        skip, self.skip = self.skip, 0
        with seeded_torch(derived_seed(self.seed, epoch, -1)):  # worker processes' seeds
            batches = super().__iter__()
        for index in count():
            with seeded_torch(derived_seed(self.seed, epoch, index)):
                batch = next(batches, None)
            if batch is None:
                return
            if index >= skip:
                yield batch


def resume_position(trainer: L.Trainer | None) -> tuple[int, int]:
    """(epoch, batches of it already trained) where training goes on: those saved by `RandomState`
    when the trainer was restored from a checkpoint (Lightning builds the training loader before it
    restores its own loop counters), else (current epoch, 0)."""
    if trainer is None:
        return 0, 0
    restored = [c.to_restore for c in trainer.callbacks if isinstance(c, RandomState) and c.to_restore is not None]
    return tuple(restored[0]["position"]) if restored else (trainer.current_epoch, 0)


def numpy_state() -> dict:
    """numpy's global RNG state in types `torch.load(weights_only=True)` reads (no numpy arrays)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "rest": [position, has_gauss, gauss]}


def set_numpy_state(state: dict) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), *state["rest"]))


class RandomState(L.Callback):
    """Saves the global RNGs (torch, numpy, python) and the stage's `random_generators()` in every
    checkpoint, restores them when a resumed run starts training, and runs validation during fit
    on a copy of them."""

    def __init__(self):
        self.stage: L.LightningModule | None = None
        self.to_restore: dict | None = None
        self.before_validation: dict | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.stage = pl_module

    def _generators(self) -> dict[str, torch.Generator]:
        generators = getattr(self.stage, "random_generators", None)
        return generators() if generators is not None else {}

    def state_dict(self) -> dict:
        trainer = self.stage.trainer
        epoch, done = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed
        position = [epoch + 1, 0] if done >= trainer.num_training_batches else [epoch, done]
        return {"position": position, **self._rng_state()}

    def _rng_state(self) -> dict:
        return {
            "torch": torch.get_rng_state(),
            "numpy": numpy_state(),
            "python": random.getstate(),
            "generators": {name: g.get_state() for name, g in self._generators().items()},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.to_restore = state_dict

    def _restore(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        set_numpy_state(state["numpy"])
        random.setstate(state["python"])
        generators = self._generators()
        for name, generator_state in state["generators"].items():
            if name in generators:
                generators[name].set_state(generator_state)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.to_restore is not None:
            self._restore(self.to_restore)
            self.to_restore = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.before_validation = self._rng_state()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.before_validation is not None:
            self._restore(self.before_validation)
            self.before_validation = None
