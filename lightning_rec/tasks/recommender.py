"""SequentialRecommender: supervised pretraining of an item encoder + sequence encoder on user behaviour."""

from __future__ import annotations

import math
import warnings
from typing import Literal

import lightning as L
import torch

from lightning_rec.data.datamodule import ItemCatalog
from lightning_rec.encoders.item import IDItemEncoder, ItemEncoder
from lightning_rec.encoders.sequence import SequenceEncoder
from lightning_rec.encoders.transformer import TransformerEncoder
from lightning_rec.metrics import ranking_metrics
from lightning_rec.tasks.objectives import FullSoftmax, Objective


class SequentialRecommender(L.LightningModule):
    """Next-item (or masked-item) recommender; later stages reuse it as their policy.

    The networks are constructor arguments chosen by `class_path` in YAML. They are sized from the
    DataModule's item catalogue in `setup` (or from the checkpoint when loading), because the number
    of items is a property of the data, not of the model config. Validation and test rank all items,
    with the user's history masked and ties counted against the model; predict returns the top-k.
    """

    def __init__(
        self,
        item_encoder: ItemEncoder | None = None,
        sequence_encoder: SequenceEncoder | None = None,
        objective: Objective | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        warmup_steps: int = 100,
        schedule: Literal["cosine", "constant"] = "cosine",
        eval_ks: list[int] = [10, 20],
        mask_history: bool = True,
        top_k: int = 10,
    ):
        super().__init__()
        with warnings.catch_warnings():
            # the networks are kept in hparams on purpose: checkpoints then reload without their YAML
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        self.item_encoder = item_encoder if item_encoder is not None else IDItemEncoder()
        self.sequence_encoder = sequence_encoder if sequence_encoder is not None else TransformerEncoder()
        self.objective = objective if objective is not None else FullSoftmax()
        if self.item_encoder.dim != self.sequence_encoder.dim:
            raise ValueError(
                f"item_encoder.dim={self.item_encoder.dim} differs from sequence_encoder.dim={self.sequence_encoder.dim}"
            )

    # -- sizing from the data ----------------------------------------------------------------------
    def build(self, catalog: ItemCatalog) -> None:
        """Create the catalogue-sized parts: item table, metrics, popularity for empty histories."""
        self.item_encoder.build(catalog)
        self.register_buffer("popularity", catalog.popularity.float().clone())
        self.num_items = catalog.num_items
        self.val_metrics = ranking_metrics(self.hparams.eval_ks, catalog.num_items, prefix="val/")
        self.test_metrics = ranking_metrics(self.hparams.eval_ks, catalog.num_items, prefix="test/")

    def setup(self, stage: str) -> None:
        if not self.item_encoder.is_built:
            self.build(self.trainer.datamodule.catalog)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["num_items"] = self.num_items

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if not self.item_encoder.is_built:  # loaded outside a Trainer: size from the checkpoint
            n = checkpoint["num_items"]
            self.build(ItemCatalog(n, None, torch.zeros(n + 1)))

    # -- the model ---------------------------------------------------------------------------------
    def encode(self, input: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden state at every position of left-padded item ids [B, L] -> [B, L, D]."""
        items = self.item_encoder() if items is None else items
        return self.sequence_encoder(items[input], input == 0)

    def score(self, input: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of all items [B, N + 1] for the next item after each input sequence.

        History items are set to -inf when `mask_history`; a row with no history at all (a user the
        model knows nothing about) gets item popularity as its scores.
        """
        items = self.item_encoder()
        input = self.objective.prepare_inference(input)
        scores = self.encode(input, items)[:, -1] @ items.T
        empty = (input != 0).sum(1) == 0
        scores = torch.where(empty.unsqueeze(1), self.popularity.to(scores.dtype), scores)
        scores[:, 0] = float("-inf")
        if history is not None and self.hparams.mask_history:
            scores = scores.scatter(1, history, float("-inf"))
        return scores

    # -- steps -------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        input, target = self.objective.prepare(batch["input"], batch["target"])
        items = self.item_encoder()
        hidden = self.encode(input, items)
        has_target = target != 0
        loss = self.objective(hidden[has_target], target[has_target], items)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def _evaluate(self, batch: dict, metrics) -> None:
        metrics.update(self.score(batch["input"], batch["history"]), batch["target"])
        self.log_dict(metrics, prog_bar=True, batch_size=len(batch["target"]))

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        scores, items = self.score(batch["input"], batch["history"]).topk(self.hparams.top_k, dim=1)
        return {"user": batch["user"], "items": items, "scores": scores}

    # -- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self):
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup, cosine = self.hparams.warmup_steps, self.hparams.schedule == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
