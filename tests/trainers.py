"""The Trainer the learning tests use: CPU, silent, nothing written unless a test asks for it."""

import os
import signal

import lightning as L

QUIET = dict(
    accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
)


def quiet_trainer(**overrides) -> L.Trainer:
    """A Trainer with the QUIET settings, any of them (or other Trainer arguments) overridden."""
    return L.Trainer(**{**QUIET, **overrides})


# The data block of a CLI run over an interaction CSV with ratings (`data`: its path).
INTERACTIONS = """class_path: lightning_rec.data.SequenceDataModule
  init_args:
    source: {{class_path: lightning_rec.data.sources.InteractionFile, init_args: {{path: {data}, rating_col: rating}}}}
    max_len: 12
    batch_size: {batch_size}
    cache_dir: null"""
RUN = """
seed_everything: 0
data:
  {data}
model:
  {model}
trainer:
  accelerator: cpu
  max_epochs: {epochs}
  default_root_dir: {out}
  enable_progress_bar: false
  enable_model_summary: false
  logger: {logger}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {out}, filename: last, monitor: null}}
"""


def run_config(data: str, model: str, out, epochs: int, logger: str = "false", callbacks: str = "") -> str:
    """The YAML of a silent CLI run of `model` on `data` (YAML blocks) that keeps `out/last.ckpt`;
    `callbacks`: more list items, each a line `    - ...` (and its own indented lines)."""
    return RUN.format(data=data, model=model, out=out, epochs=epochs, logger=logger) + callbacks


class Crash(RuntimeError):
    """What `CrashAt` raises: a run dying mid-epoch."""


class CrashAt(L.Callback):
    """Ends the run after its `batch`-th training batch, before that batch's checkpoint (as a crash
    would): with a Crash, or with `kill -9` of its own process when `kill` is set."""

    def __init__(self, batch: int, kill: bool = False):
        self.batch, self.kill, self.seen = batch, kill, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen == self.batch:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise Crash(f"crashed after {self.batch} batches")


class RanksAgree(L.Callback):
    """Fails a multi-process run whose processes end training with different weights (gradients
    that were not averaged over them)."""

    def on_train_end(self, trainer, pl_module) -> None:
        import torch

        from lightning_rec.distributed import gather_rows

        checksum = torch.stack([p.detach().double().sum() for p in pl_module.parameters()]).sum().reshape(1)
        everyone = gather_rows(checksum)
        if not torch.equal(everyone.min(), everyone.max()):
            raise AssertionError(f"the processes' weights differ: checksums {everyone.flatten().tolist()}")


class HoldsItemTableShard(L.Callback):
    """Fails a sharded (FSDP2) run in which a process holds more than its share of the item table's
    rows, or of their optimizer state, after a training step or after a validation; prints each
    process's share at the end."""

    def __init__(self):
        self.checked = 0

    def share(self, trainer, pl_module, when: str) -> tuple[int, int]:
        from torch.distributed.tensor import DTensor

        weight = pl_module.item_encoder.embedding.weight
        if not isinstance(weight, DTensor):
            raise AssertionError(f"{when}: rank {trainer.global_rank} holds the whole item table ({type(weight)})")
        total, world, rank = weight.shape[0], trainer.world_size, trainer.global_rank
        size = -(-total // world)  # torch.chunk: the first shards ceil(total / world) rows, the last the rest
        expected, rows = max(min(size, total - rank * size), 0), weight.to_local().shape[0]
        if rows != expected:
            raise AssertionError(f"{when}: rank {rank} holds {rows} of {total} item rows, not {expected}")
        return rows, total

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        rows, _ = self.share(trainer, pl_module, "after a training step")
        weight = pl_module.item_encoder.embedding.weight
        moments = trainer.optimizers[0].state[weight]["exp_avg"].to_local()
        if len(moments) != rows:
            raise AssertionError(f"rank {trainer.global_rank} keeps Adam moments of {len(moments)} rows, not {rows}")
        self.checked += 1

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.share(trainer, pl_module, "after a validation")

    def on_train_end(self, trainer, pl_module) -> None:
        rows, total = self.share(trainer, pl_module, "at the end of training")
        if not self.checked:
            raise AssertionError("no training step was checked")
        print(f"rank {trainer.global_rank} holds {rows} of {total} item rows", flush=True)


class ReportsWorld(L.Callback):
    """Prints, at the start of training, each process's global rank, the world size and the cluster
    environment Lightning took them from."""

    def on_train_start(self, trainer, pl_module) -> None:
        environment = type(trainer.strategy.cluster_environment).__name__
        print(f"rank {trainer.global_rank} of {trainer.world_size} ({environment})", flush=True)
