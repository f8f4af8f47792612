"""SimulatorTraining: fit the response models of a training and an evaluation simulator on logs.

The logs are split in two at random, by users (`partition: users`: each simulator simulates its
own users) or by events (`partition: events`: both simulate every user, but each user's training
events are dealt between them); each role's ResponseModel is fit (from its own seed) on its share
only, so a policy trained in the "train" simulator is judged in the "eval" one, whose weights and
data it never saw. Each validation calibrates both models by Platt scaling on half of their users'
held-out events and reports the expected calibration error on the other half. The checkpoint
carries the simulators as an artifact (rl/simulator_artifact.py), which later stages load with
`load_simulators`.
"""

from __future__ import annotations

import copy
import math

import lightning as L
import torch
import torch.nn.functional as F

from lightning_rec.distributed import gather_rows, keyed_uniform
from lightning_rec.metrics import ndcg_of_ranks, pessimistic_ranks
from lightning_rec.rl.calibration import expected_calibration_error, fit_platt
from lightning_rec.rl.response_model import ResponseModel
from lightning_rec.rl.simulator_artifact import CHECKPOINT_KEY, SIMULATOR_ROLES, simulator_entry

PARTITIONS = ("users", "events")
BOTH = -1  # role_of_user under `partition: events`: every user is in both roles' simulators
GOLDEN = (5**0.5 - 1) / 2


def split_users(num_users: int, eval_fraction: float, seed: int) -> torch.Tensor:
    """LongTensor[num_users]: 0 for the training simulator's users, 1 for the evaluation one's."""
    order = torch.randperm(num_users, generator=torch.Generator().manual_seed(seed))
    role = torch.zeros(num_users, dtype=torch.long)
    role[order[: max(1, round(eval_fraction * num_users))]] = 1
    return role


def eval_events(phase: torch.Tensor, positions: torch.Tensor, eval_fraction: float) -> torch.Tensor:
    """BoolTensor like `positions`: whether the event at each position (within its user's sequence)
    belongs to the evaluation simulator, given each event's user phase in [0, 1). Events are dealt
    by the golden-ratio sequence frac(phase + position * GOLDEN) < eval_fraction, so every stretch
    of a user's history goes to both simulators in about the right shares."""
    return torch.frac(phase.double() + positions.double() * GOLDEN) < eval_fraction


class SimulatorTraining(L.LightningModule):
    """Trains two ResponseModels through `lightning-rec fit` with the SequenceDataModule's windows: next-item
    softmax (cross-entropy of the logged next item against `num_negatives` uniform random items
    shared by the batch) and ratings (squared error on logged ratings).

    `partition: events` keeps every user in both simulators and deals each user's training events
    between them (eval_fraction of them to the evaluation one): the two models then differ in data
    and seed but describe the same users, for data with too few users to halve (on ml-latest-small
    it lifted the transfer between the two only a little: docs/rl.md).

    Validation uses each user's held-out next item and `calibration_negatives` uniform random items
    per user: the click logit scale * log p + shift is fit (Platt) on even users' pairs, and the
    expected calibration error measured on odd users' (val/<role>/ece; val/<role>/ece_raw is that of
    the uncalibrated log p + log(N / calibration_negatives)). Also logged per role:
    val/<role>/ndcg@10 (the held-out item ranked among all items, history masked), val/<role>/auc
    (against its negatives), val/<role>/rating_rmse, train/<role>/click_loss and rating_loss;
    val/ndcg@10 is the two roles' mean, to pick checkpoints by. Calibration gathers one
    process's validation set: run it on one device. `windows_per_batch` (training windows per step) is
    the data module's unless given.
    """

    def __init__(
        self,
        response_model: ResponseModel | None = None,
        eval_fraction: float = 0.5,
        partition: str = "users",
        partition_seed: int = 0,
        train_seed: int = 1,
        eval_seed: int = 2,
        num_negatives: int = 1000,
        calibration_negatives: int = 100,
        rating_weight: float = 1.0,
        calibration_bins: int = 15,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        windows_per_batch: int | None = None,
    ):
        super().__init__()
        self.train_batch_size = windows_per_batch
        if partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {partition!r}")
        if not 0 < eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        self.save_hyperparameters()
        response_model = response_model if response_model is not None else ResponseModel()
        self.response_models = torch.nn.ModuleList(
            [response_model, copy.deepcopy(response_model)]
        )  # by SIMULATOR_ROLES
        self.sizes: dict | None = None  # set by build, saved in checkpoints

    # -- sizing from the data ----------------------------------------------------------------------
    def build(
        self,
        num_users: int,
        num_items: int,
        rating_range: tuple[float, float] | None,
        mean_rating: float,
        history_len: int,
    ) -> None:
        self.sizes = {
            "num_users": num_users,
            "num_items": num_items,
            "rating_range": rating_range,
            "mean_rating": mean_rating,
            "history_len": history_len,
        }
        if self.hparams.partition == "users":
            role_of_user = split_users(num_users, self.hparams.eval_fraction, self.hparams.partition_seed)
        else:
            role_of_user = torch.full((num_users,), BOTH)
            phase = torch.rand(num_users, generator=torch.Generator().manual_seed(self.hparams.partition_seed))
            self.register_buffer("event_phase", phase, persistent=False)  # a function of partition_seed
        self.register_buffer("role_of_user", role_of_user)
        for model, seed in zip(self.response_models, (self.hparams.train_seed, self.hparams.eval_seed)):
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model.build(num_items, rating_range, mean_rating)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        data, split = datamodule.data, datamodule.split
        if self.sizes is None:
            ratings = data.ratings
            rating_range = None if ratings is None else (float(ratings.min()), float(ratings.max()))
            mean = 0.0 if ratings is None else float(ratings.mean())
            self.build(data.num_users, data.num_items, rating_range, mean, datamodule.hparams.max_len)
        self.val_rating = torch.zeros(data.num_users)
        if data.ratings is not None:
            self.val_rating[split.val_users] = data.ratings[data.offsets[split.val_users] + split.val_positions]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        users = [self.users_of(role) for role in SIMULATOR_ROLES]
        checkpoint[CHECKPOINT_KEY] = simulator_entry(self.response_models, users, self.sizes)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.sizes is None:  # loaded outside a Trainer: size from the checkpoint
            self.build(**checkpoint[CHECKPOINT_KEY]["sizes"])

    # -- the two roles -----------------------------------------------------------------------------
    def response_model(self, role: str) -> ResponseModel:
        if role not in SIMULATOR_ROLES:
            raise ValueError(f"a simulator's role must be one of {SIMULATOR_ROLES}, got {role!r}")
        return self.response_models[SIMULATOR_ROLES.index(role)]

    def users_of(self, role: str) -> torch.Tensor:
        """The users the simulator of `role` may simulate (those its response model is fit on)."""
        return torch.nonzero(self._in_role(self.role_of_user, SIMULATOR_ROLES.index(role))).squeeze(1).cpu()

    @staticmethod
    def _in_role(role: torch.Tensor, index: int) -> torch.Tensor:
        return (role == index) | (role == BOTH)

    def target_roles(self, batch: dict) -> torch.Tensor:
        """LongTensor like batch["target"]: the role (index in SIMULATOR_ROLES) each training target is fit for."""
        user, target = batch["user"], batch["target"]
        if self.hparams.partition == "users":
            return self.role_of_user[user].unsqueeze(1).expand_as(target)
        return eval_events(self.event_phase[user].unsqueeze(1), batch["position"], self.hparams.eval_fraction).long()

    # -- training ----------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        roles = self.target_roles(batch)
        total = 0.0
        for index, (name, model) in enumerate(zip(SIMULATOR_ROLES, self.response_models)):
            mine = (roles == index) & (batch["target"] != 0)
            if not mine.any():
                continue
            click_loss, rating_loss = self._losses(model, batch, mine)
            self.log(f"train/{name}/click_loss", click_loss)
            total = total + click_loss
            if rating_loss is not None:
                self.log(f"train/{name}/rating_loss", rating_loss)
                total = total + self.hparams.rating_weight * rating_loss
        return total

    def _losses(
        self, model: ResponseModel, batch: dict, mine: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Losses on the targets `mine` (BoolTensor like batch["target"]), each read from its full window."""
        rows = mine.any(1)
        mine = mine[rows]
        state = model.encode(batch["input"][rows])[mine]
        positive = batch["target"][rows][mine]
        negative = torch.randint(1, model.num_items + 1, (self.hparams.num_negatives,), device=self.device)
        negative_scores = model.scores(state, negative).masked_fill(negative == positive.unsqueeze(1), float("-inf"))
        logits = torch.cat([model.scores(state, positive.unsqueeze(1)), negative_scores], dim=1)
        click_loss = F.cross_entropy(logits, torch.zeros_like(positive))
        if not model.has_ratings or "rating" not in batch:
            return click_loss, None
        rating = batch["rating"][rows][mine]
        return click_loss, F.mse_loss(model.rating_estimate(state, positive.unsqueeze(1)).squeeze(1), rating)

    # -- validation: ranking quality, calibration, rating error --------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.val_outputs = {name: [] for name in SIMULATOR_ROLES}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        roles = self.role_of_user[batch["user"]]
        for index, (name, model) in enumerate(zip(SIMULATOR_ROLES, self.response_models)):
            rows = self._in_role(roles, index)
            if not rows.any():
                continue
            users, target = batch["user"][rows], batch["target"][rows]
            state = model.encode(batch["input"][rows])[:, -1]
            log_probs = torch.log_softmax(model.scores(state), dim=-1)
            # the same negatives for a user every validation, on any number of processes
            draws = torch.arange(self.hparams.calibration_negatives, device=self.device)
            negative = 1 + (keyed_uniform(0, users.unsqueeze(1), draws) * model.num_items).long()
            output = {
                "users": users,
                "logits": log_probs.gather(1, torch.cat([target.unsqueeze(1), negative], dim=1)),
                "distinct": negative != target.unsqueeze(1),
                "ranks": pessimistic_ranks(log_probs.scatter(1, batch["history"][rows], float("-inf")), target),
            }
            if model.has_ratings:
                output["rating_error"] = (
                    model.rating(state, target.unsqueeze(1)).squeeze(1) - self.val_rating.to(self.device)[users]
                )
            self.val_outputs[name].append(output)

    def on_validation_epoch_end(self) -> None:
        for name, model in zip(SIMULATOR_ROLES, self.response_models):  # a process may have none of a role's users
            if not self.val_outputs[name]:
                self.val_outputs[name].append(self._no_outputs(model))
        counts = {name: sum(len(o["users"]) for o in self.val_outputs[name]) for name in SIMULATOR_ROLES}
        present = {name: self.trainer.strategy.reduce_boolean_decision(counts[name] > 0, all=False) for name in counts}
        summaries = [self._calibrate(name) for name in SIMULATOR_ROLES if present[name]]
        if summaries:
            self.log("val/ndcg@10", sum(s["ndcg@10"] for s in summaries) / len(summaries))

    def _no_outputs(self, model: ResponseModel) -> dict[str, torch.Tensor]:
        """A validation_step output of no rows, so a process without a role's users still joins its gather."""
        negatives, device = self.hparams.calibration_negatives, self.device
        output = {
            "users": torch.zeros(0, dtype=torch.long, device=device),
            "logits": torch.zeros(0, negatives + 1, device=device),
            "distinct": torch.zeros(0, negatives, dtype=torch.bool, device=device),
            "ranks": torch.zeros(0, dtype=torch.long, device=device),
        }
        if model.has_ratings:
            output["rating_error"] = torch.zeros(0, device=device)
        return output

    def _calibrate(self, name: str) -> dict[str, float]:
        """Fit Platt scaling on even users, measure ECE on odd users; log and keep the calibration."""
        outputs = {
            key: gather_rows(torch.cat([o[key] for o in self.val_outputs[name]])) for key in self.val_outputs[name][0]
        }
        order = outputs["users"].argsort()  # every process's users, in one order
        outputs = {key: value[order] for key, value in outputs.items()}
        logits, distinct = outputs["logits"].float().cpu(), outputs["distinct"].cpu()
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        keep = torch.cat([torch.ones_like(distinct[:, :1]), distinct], dim=1)
        fit = (outputs["users"].cpu() % 2 == 0).unsqueeze(1) & keep
        held_out = (outputs["users"].cpu() % 2 == 1).unsqueeze(1) & keep
        if not held_out.any() or not fit.any():  # too few users to hold any out: fit and report on all
            fit = held_out = keep
        scale, shift = fit_platt(logits[fit], labels[fit])
        model = self.response_model(name)
        model.calibration.copy_(torch.tensor([scale, shift]))
        bins, ranks = self.hparams.calibration_bins, outputs["ranks"].cpu()
        theory_shift = math.log(model.num_items / self.hparams.calibration_negatives)
        summary = {
            "ndcg@10": float(ndcg_of_ranks(ranks, 10).mean()),
            "auc": float(((logits[:, :1] > logits[:, 1:]) | ~distinct).float().mean()),
            "ece": expected_calibration_error(torch.sigmoid(scale * logits[held_out] + shift), labels[held_out], bins),
            "ece_raw": expected_calibration_error(
                torch.sigmoid(logits[held_out] + theory_shift), labels[held_out], bins
            ),
        }
        if "rating_error" in outputs:
            summary["rating_rmse"] = float(outputs["rating_error"].pow(2).mean().sqrt())
        self.log_dict({f"val/{name}/{key}": value for key, value in summary.items()})
        return summary

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
