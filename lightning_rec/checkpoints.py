"""Reading a checkpoint file a user named (`--ckpt_path`, a stage's `pretrained`, `simulator` or
`checkpoint`): a missing, truncated or foreign file is a DataError naming it, not a traceback from
inside torch's zip reader."""

from __future__ import annotations

from pathlib import Path

import torch

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
