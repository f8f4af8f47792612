"""`lightning-rec`: the LightningCLI entry point (fit / validate / test / predict) plus `recommend`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lightning_rec.data.datamodule import SequenceDataModule
from lightning_rec.memory import keep_freed_memory


def use_wandb_offline_without_key() -> None:
    """Runs are written locally (`wandb sync` later) when no W&B credentials exist, so a fresh
    machine or CI never blocks on a login prompt or the network."""
    if "WANDB_MODE" in os.environ or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
        os.environ["WANDB_MODE"] = "offline"


class RecommenderCLI(LightningCLI):
    """Every stage is a LightningModule chosen by `model.class_path`; data is a SequenceDataModule."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parser_kwargs", {}).setdefault("parser_mode", "omegaconf+")
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            L.LightningModule, SequenceDataModule, *args, subclass_mode_model=True, subclass_mode_data=True, **kwargs
        )


def main(args: list[str] | None = None) -> None:
    use_wandb_offline_without_key()
    keep_freed_memory()
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["recommend"]:
        from lightning_rec.recommend import recommend_main

        recommend_main(argv[1:])
        return
    RecommenderCLI(args=args)


if __name__ == "__main__":
    main()
