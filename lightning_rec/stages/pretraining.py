"""SequentialRecommender: supervised pretraining of an item encoder + sequence encoder on user behaviour."""

from __future__ import annotations

import math
import warnings
from typing import Literal

import lightning as L
import torch

from lightning_rec.checkpoints import read_checkpoint
from lightning_rec.data.datamodule import ItemCatalog
from lightning_rec.data.errors import DataError
from lightning_rec.encoders.item import IDItemEncoder, ItemEncoder
from lightning_rec.encoders.sequence import SequenceEncoder
from lightning_rec.encoders.transformer import TransformerEncoder
from lightning_rec.metrics import ranking_metrics
from lightning_rec.objectives.next_item import FullSoftmax, Objective
from lightning_rec.scoring import catalogue_scores

RECOMMENDER_KEY = "recommender"  # the checkpoint entry of a recommender a later stage holds


class RankingRecommender(L.LightningModule):
    """What every recommender shares, baselines included: it is sized from the DataModule's item
    catalogue in `setup` (or from the checkpoint when loading), validation and test rank all items
    with the user's history masked and ties counted against the model, and predict returns the
    top-k. Subclasses implement `score`. `test_cold/` metrics cover the test rows whose target item
    has no training event (withheld cold-start items, or items first seen at test time); they exist
    only when the catalogue has such items. Needs hparams eval_ks, mask_history and top_k.
    """

    def build(self, catalog: ItemCatalog) -> None:
        """Create the catalogue-sized parts: metrics, popularity for empty histories."""
        self.register_buffer("popularity", catalog.popularity.float().clone())
        self.num_items = catalog.num_items
        self.item_ids = catalog.info["item"].tolist() if catalog.info is not None else None
        self.val_metrics = ranking_metrics(self.hparams.eval_ks, catalog.num_items, prefix="val/")
        self.test_metrics = ranking_metrics(self.hparams.eval_ks, catalog.num_items, prefix="test/")
        has_cold = bool((catalog.popularity[1:] == 0).any())
        self.test_cold_metrics = (
            ranking_metrics(self.hparams.eval_ks, catalog.num_items, prefix="test_cold/") if has_cold else None
        )

    @property
    def is_built(self) -> bool:
        """Whether this module was sized. Not whether its networks were: networks kept in a checkpoint's
        hyperparameters come back already built, yet the module's own buffers still need creating."""
        return hasattr(self, "num_items")

    def setup(self, stage: str) -> None:
        if not self.is_built:
            self.build(self.trainer.datamodule.catalog)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["num_items"] = self.num_items
        checkpoint["item_ids"] = self.item_ids

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Sizes an unbuilt module from the checkpoint; a module built from data with items added after
        training (appended, see `items_without_events`) gets the checkpoint's weights grown to it.
        A checkpoint without its state dict was loaded into the shards already (ModelParallelStrategy
        loads the weights itself, before this hook), so it is not grown: a catalogue grown since
        training fails that load on the item table's shape; test it on one process or with DDP."""
        if not self.is_built:  # loaded outside a Trainer: size from the checkpoint
            n = checkpoint["num_items"]
            self.build(ItemCatalog(n, None, torch.zeros(n + 1)))
            self.item_ids = checkpoint.get("item_ids")
        elif "state_dict" in checkpoint:
            checkpoint["state_dict"] = self.grown_state(checkpoint, self._trainer.ckpt_path if self._trainer else None)

    def grown_state(self, checkpoint: dict, path: str | None = None) -> dict:
        """The checkpoint's state dict with every catalogue-sized tensor ([n + 1, ...] where this module
        has [N + 1, ...]) padded with zero rows for the N - n items it did not know: no ID vector, no
        training event, so they are ranked by what their text gives them. An error unless this
        module's items begin with the checkpoint's, in the same order (their rows are reused as they are)."""
        n, state = checkpoint["num_items"], checkpoint["state_dict"]
        known, where = checkpoint.get("item_ids"), f"{path}: " if path else ""
        if n > self.num_items:
            raise DataError(
                f"{where}the checkpoint knows {n} items, this data only {self.num_items}: "
                "use the data configuration it was trained with"
            )
        if known is not None and self.item_ids is not None and self.item_ids[: len(known)] != known:
            raise DataError(
                f"{where}the checkpoint's {n} items are not the first {n} items of this data, in order; "
                "items added after training must come after the others (items_without_events: true)"
            )
        if n == self.num_items:
            return state
        own = self.state_dict()
        return {
            key: torch.cat([value, value.new_zeros(self.num_items - n, *value.shape[1:])])
            if key in own and value.dim() > 0 and len(value) == n + 1 and len(own[key]) == self.num_items + 1
            else value
            for key, value in state.items()
        }

    def score(self, input: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of all items [B, N + 1] for the next item after each input sequence; padding column
        and (when `mask_history`) history items at -inf."""
        raise NotImplementedError

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        scores = self._evaluate(batch, self.test_metrics)
        if (
            self.test_cold_metrics is not None
        ):  # updated on every batch, even with no cold row, so DDP ranks stay in step
            cold = self.popularity[batch["target"]] == 0
            self.test_cold_metrics.update(scores[cold], batch["target"][cold])
            self.log_dict(self.test_cold_metrics, batch_size=len(batch["target"]))

    def _evaluate(self, batch: dict, metrics) -> torch.Tensor:
        scores = self.score(batch["input"], batch["history"])
        metrics.update(scores, batch["target"])
        self.log_dict(metrics, prog_bar=True, batch_size=len(batch["target"]))
        return scores

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        scores, items = self.score(batch["input"], batch["history"]).topk(self.hparams.top_k, dim=1)
        return {"user": batch["user"], "items": items, "scores": scores}


class SequentialRecommender(RankingRecommender):
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
                f"item_encoder.dim={self.item_encoder.dim} differs from "
                f"sequence_encoder.dim={self.sequence_encoder.dim}"
            )

    # -- sizing from the data ----------------------------------------------------------------------
    def build(self, catalog: ItemCatalog) -> None:
        """Create the catalogue-sized parts: item table, metrics, popularity for empty histories."""
        self.item_encoder.build(catalog)
        self.sequence_encoder.build(catalog)
        super().build(catalog)

    # -- sharding (FSDP2) ---------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Under ModelParallelStrategy (configs/trainer/fsdp-cpu.yaml), which gives this module a device
        mesh: FSDP2 `fully_shard` over its data-parallel dimension, so every process keeps 1/world of
        each parameter, gradient and optimizer state between steps. Shard groups: each layer of the
        sequence encoder (the elements of its longest ModuleList), the rest of the sequence encoder,
        the item encoder, and any other child with parameters (the objective's). Each is gathered in
        its own forward; this module itself is not a group, because Lightning calls its steps without
        going through its forward. The item encoder stays gathered after its forward
        (reshard_after_forward=False) until the backward: IDItemEncoder returns its parameter itself,
        whose storage a reshard would free while the step still reads it. Any other strategy (DDP,
        one device) leaves the module as it is; checkpoints are full state dicts
        (save_distributed_checkpoint: false), loadable on one process."""
        from torch.distributed.fsdp import FSDPModule, fully_shard
        from torch.distributed.tensor import DTensor

        if self.device_mesh is None or isinstance(self.item_encoder, FSDPModule):  # not sharded, or already
            return
        mesh = self.device_mesh["data_parallel"]
        lists = [module for module in self.sequence_encoder.modules() if isinstance(module, torch.nn.ModuleList)]
        for layer in max(lists, key=len) if lists else []:
            fully_shard(layer, mesh=mesh)
        fully_shard(self.item_encoder, mesh=mesh, reshard_after_forward=False)
        for child in self.children():
            if any(not isinstance(parameter, DTensor) for parameter in child.parameters()):
                fully_shard(child, mesh=mesh)
        unsharded = [name for name, parameter in self.named_parameters() if not isinstance(parameter, DTensor)]
        if unsharded:  # they would train apart on each process: nothing averages their gradients
            raise RuntimeError(f"parameters outside every FSDP shard group: {unsharded}")

    def on_validation_epoch_end(self) -> None:
        reshard(self)

    def on_test_epoch_end(self) -> None:
        reshard(self)

    # -- the model ---------------------------------------------------------------------------------
    def encode(self, input: torch.Tensor, items: torch.Tensor | None = None, last: bool = False) -> torch.Tensor:
        """Hidden state at every position of left-padded item ids [B, L] -> [B, L, D], or (`last`)
        after the last position only [B, 1, D], cheaper where the encoder can skip the others."""
        encoder = self.sequence_encoder.last_state if last else self.sequence_encoder
        return encoder(self.encoder_inputs(input, items), input == 0)

    def encoder_inputs(self, input: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """What the sequence encoder reads for item ids `input` [...]: their vectors [..., D] from the
        item table `items` (computed when not given), or the ids themselves for a language model over
        the items' text."""
        if self.sequence_encoder.reads_item_ids:
            return input
        return (self.item_encoder() if items is None else items)[input]

    def score(
        self, input: torch.Tensor, history: torch.Tensor | None = None, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores of all items [B, N + 1] for the next item after each input sequence.

        History items are set to -inf when `mask_history`; a row with no history at all (a user the
        model knows nothing about) gets item popularity as its scores. `items`: the item table
        [N + 1, D], computed once by a caller whose weights stay fixed (a service: a text item encoder
        costs far more than the rest of a request); computed here when not given.
        """
        items = self.item_encoder() if items is None else items
        history = history if self.hparams.mask_history else None
        return catalogue_scores(self.user_states(input, items), items, input, self.popularity, history)

    def user_states(self, input: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """[B, D]: the state whose inner products with the item table are the next-item scores after
        each input sequence (what a top-k index searches with)."""
        return self.encode(self.objective.prepare_inference(input), items, last=True)[:, -1]

    # -- steps -------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.pretraining_loss(batch["input"], batch["target"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def pretraining_loss(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The objective's loss on training windows (input [B, L], next items [B, L], 0 = none)."""
        input, target = self.objective.prepare(input, target)
        items = self.item_encoder()
        hidden = self.encode(input, items)
        target = target[:, -hidden.shape[1] :]  # encoders too costly to run per position return the last one
        has_target = target != 0
        candidates, target, counts = self.training_candidates(items, target[has_target])
        return self.objective(hidden[has_target], target, candidates, counts)

    def training_candidates(
        self, items: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The item table, targets and training-event counts of the training softmax, without the items
        that have no training event (withheld cold-start items, items first seen at evaluation). Those
        do not exist yet at training time; kept in, they would only ever be negatives, and a text
        encoder would learn to rank them last whatever their text says. Evaluation still ranks every
        item."""
        seen = self.popularity > 0
        seen[0] = True  # padding keeps index 0
        if seen.all() or not seen[1:].any():  # nothing withheld, or no counts (sized from a bare checkpoint)
            return items, target, self.popularity
        return items[seen], (torch.cumsum(seen, 0) - 1)[target], self.popularity[seen]

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


def reshard(module: torch.nn.Module) -> None:
    """Every FSDP2 shard group in `module` back to its shards: after an evaluation, the groups kept
    gathered after their forward (the item encoder's) would otherwise stay whole until the next backward."""
    from torch.distributed.fsdp import FSDPModule

    for part in module.modules():
        if isinstance(part, FSDPModule):
            part.reshard()


def recommender_entry(recommender: SequentialRecommender, prefix: str) -> dict:
    """The checkpoint entry (under RECOMMENDER_KEY) of the recommender a later stage holds at `prefix`
    of its state dict: its own hyperparameters and size, so `load_recommender` rebuilds it from that
    checkpoint alone, without the stage that trained it."""
    return {"hyper_parameters": dict(recommender.hparams), "num_items": recommender.num_items, "weights": prefix}


def load_recommender(path: str) -> SequentialRecommender:
    """The SequentialRecommender of a pretraining checkpoint, or the one a later stage's checkpoint
    holds (a fine-tuned policy), on the CPU. Checkpoints named in one's own configuration are
    trusted (weights_only=False: they hold configuration objects)."""
    checkpoint = read_checkpoint(path)
    entry = checkpoint.get(RECOMMENDER_KEY)
    if entry is None:
        return SequentialRecommender.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    recommender = SequentialRecommender(**entry["hyper_parameters"])
    recommender.on_load_checkpoint(entry)  # sized from the checkpoint
    prefix = entry["weights"]
    state = {key[len(prefix) :]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}
    recommender.load_state_dict(state)
    return recommender
