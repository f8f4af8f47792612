"""Checkpoint files: reading one a user named (`--ckpt_path`, a stage's `pretrained`, `simulator` or
`checkpoint`), where a missing, truncated or foreign file is a DataError naming it, not a traceback
from inside torch's zip reader; and writing the latest weights (`LatestCheckpoint`,
configs/callbacks/last.yaml) so that no run ends without them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_rec.data.errors import DataError


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """The checkpoint at `path` on the CPU (`mmap`: tensors left on disk, for a cheap check). Files
    named in one's own configuration are trusted (weights_only=False: they hold configuration
    objects)."""
    if not Path(path).is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as error:
        raise DataError(
            f"{path}: not a readable checkpoint ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "it may be truncated by an interrupted copy"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise DataError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


class LatestCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint without a monitor (the latest weights) that also saves when fit stops between
    two validations (`max_steps`, `max_time`, an early stop): Lightning's saves at validation only,
    so a run shorter than `val_check_interval` would end with no checkpoint at all and a longer one
    would lose the steps after its last validation."""

    def __init__(self, **kwargs):
        if kwargs.get("monitor") is not None:
            raise ValueError("LatestCheckpoint keeps the latest weights: give it no monitor")
        super().__init__(**kwargs)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
