"""The Trainer the learning tests use: CPU, silent, nothing written unless a test asks for it."""

import lightning as L

QUIET = dict(
    accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
)


def quiet_trainer(**overrides) -> L.Trainer:
    """A Trainer with the QUIET settings, any of them (or other Trainer arguments) overridden."""
    return L.Trainer(**{**QUIET, **overrides})
