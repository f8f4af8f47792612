"""`lightning-rec`: the LightningCLI entry point (fit / validate / test / predict) plus `recommend` and `serve`."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lightning_rec.checkpoints import read_checkpoint
from lightning_rec.data.datamodule import SequenceDataModule
from lightning_rec.data.errors import DataError
from lightning_rec.divergence import NonFiniteTraining, StopOnNonFinite
from lightning_rec.memory import keep_freed_memory
from lightning_rec.quiet import (
    drop_deprecated_wandb_setting,
    quiet_other_libraries,
    silence_wandb_when_offline_by_default,
)
from lightning_rec.resume import RandomState

DEBUG_FLAG, DEBUG_VARIABLE = "--debug", "LIGHTNING_REC_DEBUG"
# what a user can fix (their data, caches, checkpoints, learning rate): one line, no traceback
USER_ERRORS = (DataError, NonFiniteTraining)
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")


def use_wandb_offline_without_key() -> None:
    """Runs are written locally (`wandb sync` later) when no W&B credentials exist, so a fresh
    machine or CI never blocks on a login prompt or the network."""
    if "WANDB_MODE" in os.environ or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
        os.environ["WANDB_MODE"] = "offline"
        silence_wandb_when_offline_by_default()


class RecommenderCLI(LightningCLI):
    """Every stage is a LightningModule chosen by `model.class_path`; data is a SequenceDataModule.
    Every Trainer also gets `StopOnNonFinite` and `resume.RandomState` (persistent callbacks: added to
    the recipe's own), and torch's deterministic kernels where it has them (`deterministic: warn`):
    without them two runs on several busy threads drift apart in their last bits, likely the CPU
    kernels that accumulate with atomic adds (docs/quickstart.md). A recipe may still say otherwise."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parser_kwargs", {}).setdefault("parser_mode", "omegaconf+")
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        defaults = kwargs.setdefault("trainer_defaults", {})
        defaults["callbacks"] = [*defaults.get("callbacks", []), StopOnNonFinite(), RandomState()]
        defaults.setdefault("deterministic", "warn")
        with warnings.catch_warnings():  # args given are ours (main, recommend), not mixed up with sys.argv
            warnings.filterwarnings("ignore", message=".*args parameter is intended")
            super().__init__(
                L.LightningModule,
                SequenceDataModule,
                *args,
                subclass_mode_model=True,
                subclass_mode_data=True,
                **kwargs,
            )

    def _parse_ckpt_path(self) -> None:
        """A `--ckpt_path` file that is missing or unreadable is a DataError before Lightning reads its
        hyperparameters (its own names, `last`, `best`, ..., and remote URLs are left to it)."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in SPECIAL_CKPT_PATHS and "://" not in str(path):
            read_checkpoint(path, mmap=True)
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        for logger in trainer.loggers:
            drop_deprecated_wandb_setting(logger)
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        """`--ckpt_path` is read whole (`weights_only` false unless given), as every checkpoint named in
        one's own configuration is (checkpoints.read_checkpoint): the stages' checkpoints hold their
        configuration objects (a fine-tuned policy's behaviour, the recommender it carries), and
        resuming one with torch's weights-only default would refuse them."""
        options = self.config_init.get(subcommand, {})
        if "weights_only" in options and options["weights_only"] is None:
            options["weights_only"] = False
        super()._run_subcommand(subcommand)

    def before_test(self) -> None:
        """A stage that prints its own results table (`prints_test_table`) does not get Lightning's
        table of the same logged numbers as well."""
        if getattr(self.model, "prints_test_table", False):
            self.config_init["test"]["verbose"] = False

    def instantiate_classes(self) -> None:
        """A value a constructor refuses (its ValueError, wrapped by jsonargparse in a dump of the
        whole section) is a DataError with the constructors' own messages."""
        try:
            super().instantiate_classes()
        except DataError:
            raise
        except ValueError as error:
            lines = [line.strip() for line in str(error).splitlines()]
            reasons = [line[2:] for line in lines if line.startswith("- ") and "<class 'NoneType'>" not in line]
            raise DataError(f"invalid configuration: {'; '.join(reasons) or lines[0]}") from error


def main(args: list[str] | None = None) -> None:
    """Bad input (USER_ERRORS) ends the run with its one-line message on stderr and exit status 1;
    `--debug` anywhere on the command line, or LIGHTNING_REC_DEBUG=1, shows the traceback instead."""
    use_wandb_offline_without_key()
    quiet_other_libraries()
    keep_freed_memory()
    argv = sys.argv[1:] if args is None else list(args)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_VARIABLE, "0") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    if args is None:  # LightningCLI reads sys.argv itself (and warns if given both)
        sys.argv[1:] = argv
    try:
        run(argv, None if args is None else argv)
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"lightning-rec: error: {error}", file=sys.stderr)
        sys.exit(1)


def run(argv: list[str], args: list[str] | None) -> None:
    if argv[:1] == ["recommend"]:
        from lightning_rec.recommend import recommend_main

        recommend_main(argv[1:])
        return
    if argv[:1] == ["serve"]:
        from lightning_rec.serving.app import serve_main

        serve_main(argv[1:])
        return
    RecommenderCLI(args=args)


if __name__ == "__main__":
    main()
