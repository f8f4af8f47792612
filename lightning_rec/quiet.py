"""Other libraries' known and harmless terminal lines, filtered where they arise (warnings filters,
log filters, the libraries' own switches), so a run shows the project's progress bars, tables and
results. Each entry says why it is harmless; anything not listed still shows."""

from __future__ import annotations

import logging
import os
import warnings

HARMLESS_WARNINGS = (
    # Lightning's own call of a torch API it has not caught up with (lightning/pytorch/utilities/_pytree.py)
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # frozen parts (a PLM, cached text vectors) are in eval mode on purpose
    r"Found \d+ module\(s\) in eval mode at the start of training",
    # `seed_everything: true` in a recipe: Lightning picks 0 and logs "Seed set to 0" anyway
    r"No seed found, seed set to",
    # testing or predicting a checkpoint from another run's folder: only its best path is kept, as intended
    r"The dirpath has changed from",
    # small demo epochs: fewer batches than the logging interval
    # the encode stage with an up-to-date cache: nothing to predict, by design
    r"Total length of `DataLoader` across ranks is zero",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)
HARMLESS_LOG_LINES = (
    "💡 Tip:",  # advertisements for LitLogger and litmodels
    "GPU available: False",  # accelerators this machine does not have
    "TPU available: False",
    "HPU available: False",
    "Loading `train_dataloader` to estimate number of stepping batches",
)
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(HARMLESS_LOG_LINES)


def quiet_other_libraries() -> None:
    """Install the filters (idempotent: warnings filters and log filters are not duplicated)."""
    for pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropHarmless) for f in logger.filters):
            logger.addFilter(_DropHarmless())


def silence_wandb_when_offline_by_default() -> None:
    """When W&B went offline because no credentials exist (cli.use_wandb_offline_without_key), its
    banners (version, offline notice, `wandb leet`, deprecated `anonymous` setting, sync hint) say
    nothing the docs do not: runs are under the logger's save_dir/wandb, `wandb sync` uploads them."""
    os.environ.setdefault("WANDB_SILENT", "true")


def drop_deprecated_wandb_setting(logger) -> None:
    """Lightning's WandbLogger passes `anonymous=None` to `wandb.init`, which wandb (0.2x) warns is
    deprecated whatever its value; None is wandb's own default, so leaving it out changes nothing."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and "anonymous" in init and init["anonymous"] is None:
        del init["anonymous"]
