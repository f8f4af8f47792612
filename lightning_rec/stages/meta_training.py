"""MetaPolicyOptimizer: meta-learn a policy start that adapts to a new user or segment in a few steps."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import lightning as L
import pandas as pd
import torch

from lightning_rec.data.datamodule import ItemCatalog
from lightning_rec.distributed import world
from lightning_rec.meta.adaptive_heads import StateHead
from lightning_rec.meta.adaptive_policy import Adapt, AdaptivePolicy
from lightning_rec.meta.algorithms import FOMAML, MetaAlgorithm, Reptile
from lightning_rec.meta.context import ContextHead, ContextLoop
from lightning_rec.meta.inner import InnerLoop, InnerLoss
from lightning_rec.meta.tables import adaptation_table, plot_curves, publish
from lightning_rec.meta.task_batch import TaskBatch
from lightning_rec.meta.task_environment import TaskEnvironment
from lightning_rec.meta.users import encoder_states
from lightning_rec.metrics import ndcg_of_ranks, pessimistic_ranks
from lightning_rec.stages.pretraining import SequentialRecommender, load_recommender


def _ndcg(scores: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@k of each row [M] (one relevant item, ties against the model)."""
    return ndcg_of_ranks(pessimistic_ranks(scores, target), k)


class MetaPolicyOptimizer(L.LightningModule):
    """First-order meta-learning (FOMAML or Reptile, chosen in YAML) of a pretrained recommender.

    Each training step takes a meta-batch of tasks (cold-start users, user segments; see
    MetaDataModule), adapts the `adapt` parameters with `inner_steps` SGD steps at `inner_lr` on
    every task's support set (all tasks at once, through torch.func) with the next-item loss or,
    given an `environment`, `inner_loss: policy_gradient` in the simulator, and steps the outer
    optimizer on the algorithm's meta-gradient, for every parameter or (`meta_parameters: adapted`)
    only the adapted ones, the rest staying the pretrained weights; with `learn_inner_lr` (Meta-SGD,
    FOMAML only) also a learning rate per adapted weight, starting at `inner_lr`. Validation reports NDCG@10 on
    held-out users' query events after adaptation (`val/ndcg@10`, for checkpointing). Test compares, per task set, the
    plain pretrained start and the meta-learned start before and after the same adaptation (NDCG@10
    on query events, and with an environment the return in its "eval" simulator), and writes the
    table and adaptation curves. Predict replays test users' events in time order, adapting between
    them, against the same policies without adaptation.

    The start is `checkpoint` (a SequentialRecommender checkpoint, as `lightning-rec fit` writes, or
    a fine-tuned policy's; loaded in setup, so instantiating the stage reads no checkpoint) or
    `recommender` (sized from the data if not built); a frozen copy of it is kept as the plain
    pretrained start.
    """

    prints_test_table = True  # the meta-test table (tables.py): the CLI skips Lightning's copy

    def __init__(
        self,
        checkpoint: str | None = None,
        recommender: SequentialRecommender | None = None,
        head: StateHead | None = None,
        algorithm: MetaAlgorithm | None = None,
        adapt: Adapt = "all",
        num_top_layers: int = 1,
        inner_steps: int = 3,
        inner_lr: float = 0.1,
        learn_inner_lr: bool = False,
        inner_loss: InnerLoss = "next_item",
        environment: TaskEnvironment | None = None,
        meta_parameters: Literal["all", "adapted"] = "all",
        curve_steps: int | None = None,
        meta_lr: float = 1e-3,
        weight_decay: float = 0.0,
        gradient_clip: float = 1.0,
        eval_k: int = 10,
    ):
        super().__init__()
        # the recommender is saved as weights; the environment is where the policy is played, not part
        # of it: left out, `test --ckpt_path` takes it from the configuration (LightningCLI would
        # otherwise put back the checkpoint's, and a run trained without one would report no returns)
        self.save_hyperparameters(ignore=["recommender", "environment"])
        if (checkpoint is None) == (recommender is None):
            raise ValueError("give exactly one of checkpoint (a pretraining checkpoint path) or recommender")
        if inner_loss == "policy_gradient" and environment is None:
            raise ValueError("inner_loss='policy_gradient' needs an environment (a simulator checkpoint)")
        if learn_inner_lr and isinstance(algorithm, Reptile):
            raise ValueError(
                "learn_inner_lr (Meta-SGD) needs FOMAML: Reptile's meta-gradient has no term for the inner rates"
            )
        if isinstance(head, ContextHead):
            if environment is None:
                raise ValueError(
                    "a ContextHead adapts on the episodes it plays: it needs an environment (a simulator checkpoint)"
                )
            if isinstance(algorithm, Reptile) or learn_inner_lr:
                raise ValueError(
                    "a ContextHead is meta-trained by FOMAML through its context: not with Reptile or learn_inner_lr"
                )
        self.algorithm = algorithm if algorithm is not None else FOMAML()
        self.environment = environment
        self.automatic_optimization = False
        self.policy: AdaptivePolicy | None = None
        self._head = (head,)  # the policy's until it exists (a tuple: not a second registered copy)
        if recommender is not None:
            self._start(recommender)

    # -- construction ------------------------------------------------------------------------------
    def _start(self, recommender: SequentialRecommender) -> None:
        """The policy from `recommender` (the `checkpoint`'s, loaded in setup, or the one given)."""
        self.policy = AdaptivePolicy(recommender, self._head[0])
        if recommender.item_encoder.is_built:
            self._build()

    def _build(self) -> None:
        """The frozen plain copy of the (built) policy, and an inner loop for each."""
        self.plain = copy.deepcopy(self.policy).requires_grad_(False)
        hp = self.hparams
        context = isinstance(self.policy.head, ContextHead)  # adapted by played episodes, not by gradient steps
        names = self.policy.adapted_names("head" if context else hp.adapt, hp.num_top_layers)
        if hp.meta_parameters == "adapted":  # the outer loop moves only the adapted parameters (a ContextHead's)
            for name, param in self.policy.named_parameters():
                param.requires_grad_(name in names)
        if hp.learn_inner_lr:  # after the plain copy: the plain start adapts at the fixed inner_lr
            self.policy.learn_inner_rates(names, hp.inner_lr)
        if context:
            self.inner, self.plain_inner = (
                ContextLoop(policy, hp.inner_steps, self.environment) for policy in (self.policy, self.plain)
            )
        else:
            self.inner, self.plain_inner = (
                InnerLoop(policy, names, hp.inner_steps, hp.inner_lr, hp.inner_loss, self.environment)
                for policy in (self.policy, self.plain)
            )

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if self.policy is None:
            self._start(load_recommender(self.hparams.checkpoint))  # pretraining or fine-tuned policy
        if datamodule is not None and datamodule.users is None:  # segment_by: encoder, by the start's own user states
            states = encoder_states(
                self.policy.recommender, datamodule.data, datamodule.split.train_end, datamodule.segment_window
            )
            datamodule.segment(torch.nn.functional.normalize(states, dim=1))
        if not hasattr(self, "plain"):
            self.policy.recommender.build(datamodule.catalog)
            self._build()
        if self.environment is not None:
            evaluation_users = torch.cat([datamodule.users["val"], datamodule.users["test"]])
            self.environment.attach(
                datamodule.data,
                datamodule.split.train_end,
                datamodule.assignment,
                evaluation_users,
                datamodule.catalog.categories,
            )

    def random_generators(self) -> dict[str, torch.Generator]:
        """The environment's dice (resume.RandomState keeps them in the checkpoints)."""
        return self.environment.random_generators() if self.environment is not None else {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["num_items"] = self.policy.recommender.num_items

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.policy is None:  # loaded outside a Trainer
            self._start(load_recommender(self.hparams.checkpoint))
        if not hasattr(self, "plain"):
            n = checkpoint["num_items"]
            self.policy.recommender.build(ItemCatalog(n, None, torch.zeros(n + 1)))
            self._build()

    @property
    def curve_steps(self) -> int:
        return self.hparams.curve_steps if self.hparams.curve_steps is not None else 2 * self.hparams.inner_steps

    # -- meta-training -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, TaskBatch], batch_idx: int) -> None:
        optimizer = self.optimizers()
        total = sum(len(tasks) for tasks in batch.values())
        meta_gradient: dict[str, torch.Tensor] = {}
        for kind, tasks in batch.items():
            if self.environment is not None:  # each segment task in one of a family's training environments
                tasks = self.environment.in_training_environments(tasks)
            gradient, loss = self.algorithm.meta_gradient(self.inner, tasks)
            for name, g in gradient.items():
                meta_gradient[name] = meta_gradient.get(name, 0) + g * (len(tasks) / total)
            self.log(f"train/{kind}/query_loss", loss, prog_bar=True, batch_size=len(tasks))
        meta_gradient = mean_over_processes(meta_gradient, total)
        optimizer.zero_grad()
        params = dict(self.policy.named_parameters())
        for name, g in meta_gradient.items():
            params[name].grad = g
        if self.hparams.gradient_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip, gradient_clip_algorithm="norm")
        optimizer.step()

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.meta_lr, weight_decay=self.hparams.weight_decay)

    # -- evaluation --------------------------------------------------------------------------------
    def _curve(
        self, loop: InnerLoop, tasks: TaskBatch, steps: int, returns: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        """Per inner step 0..steps: NDCG@k of every query row, and (`returns`) the return of each
        episode in the eval simulator. Runs with autograd on even inside Lightning's inference
        mode (the inner loop needs it). The item table is computed once for the whole curve, and so
        are the query rows' states when only the head adapts."""
        with torch.inference_mode(False), torch.enable_grad():
            tasks = tasks.apply(torch.clone)
            present = tasks.query_target != 0
            with torch.no_grad():
                items = loop.item_table()
            hidden = loop.query_hidden(tasks, items)
            curve = []
            for fast in loop.fast_weights(tasks, steps, items=items):
                point = {
                    "ndcg": _ndcg(
                        loop.query_scores(fast, tasks, items, hidden)[present],
                        tasks.query_target[present],
                        self.hparams.eval_k,
                    )
                }
                if returns:
                    point["return"] = loop.returns(fast, tasks, items).flatten()
                curve.append(point)
            return curve

    def validation_step(self, batch: TaskBatch, batch_idx: int) -> None:
        curve = self._curve(self.inner, batch, self.hparams.inner_steps)
        k = self.hparams.eval_k
        for name, point in ((f"val/ndcg@{k}_before", curve[0]), (f"val/ndcg@{k}", curve[-1])):
            self.log(name, point["ndcg"].mean(), prog_bar=True, batch_size=len(point["ndcg"]), sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._test_sums: dict[tuple[str, str, int, str], torch.Tensor] = {}

    def _accumulate(self, key: tuple[str, str, int, str], values: torch.Tensor) -> None:
        """Running [sum, sum of squares, count] of one curve point."""
        sums = torch.stack(
            [values.sum(), values.square().sum(), torch.tensor(float(len(values)), device=values.device)]
        )
        self._test_sums[key] = self._test_sums.get(key, 0) + sums

    def test_step(self, batch: TaskBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Both starts' adaptation curves on the batch's tasks (segment tasks in each of a family's
        held-out environments)."""
        returns = self.environment is not None
        for tasks in self.environment.in_held_out_environments(batch) if returns else [batch]:
            curves = {
                start: self._curve(loop, tasks, self.curve_steps, returns)
                for start, loop in (("plain", self.plain_inner), ("meta", self.inner))
            }
            for step, (plain, meta) in enumerate(zip(curves["plain"], curves["meta"])):
                for metric in meta:  # the same rows (and, for returns, the same players and dice) for both starts
                    self._accumulate((tasks.name, "plain", step, metric), plain[metric])
                    self._accumulate((tasks.name, "meta", step, metric), meta[metric])
                    self._accumulate((tasks.name, "meta-plain", step, metric), meta[metric] - plain[metric])

    def on_test_epoch_end(self) -> None:
        keys = sorted(self._test_sums)
        if world()[1] > 1:  # a process may have seen none of a loader's tasks: agree on the keys first
            everyone = [None] * world()[1]
            torch.distributed.all_gather_object(everyone, keys)
            keys = sorted(set().union(*everyone))
        sums = torch.stack([self._test_sums.get(key, torch.zeros(3, device=self.device)) for key in keys])
        if world()[1] > 1:
            torch.distributed.all_reduce(sums)
        count = sums[:, 2].clamp(min=1)
        mean = sums[:, 0] / count
        se = ((sums[:, 1] / count - mean.square()).clamp(min=0) / (count - 1).clamp(min=1)).sqrt()
        k = self.hparams.eval_k
        curves = pd.DataFrame(
            [
                (name, start, step, f"ndcg@{k}" if metric == "ndcg" else metric, m, e, int(n))
                for (name, start, step, metric), m, e, n in zip(keys, mean.tolist(), se.tolist(), sums[:, 2].tolist())
            ],
            columns=["tasks", "start", "step", "metric", "value", "se", "count"],
        )
        table = adaptation_table(curves, self.hparams.inner_steps)
        for row in table.itertuples(index=False):
            for column in ("plain_before", "meta_before", "plain_adapted", "meta_adapted"):
                self.log(
                    f"test/{row.tasks}/{column}_{row.metric}", float(getattr(row, column)), add_dataloader_idx=False
                )
        directory = self._report_dir()  # on every process: Trainer.log_dir broadcasts
        if self.trainer.is_global_zero:
            directory.mkdir(parents=True, exist_ok=True)
            images = {}
            for metric in dict.fromkeys(curves.metric):
                path = images[f"adaptation_curves_{metric}"] = (
                    directory / f"adaptation_curves_{metric.replace('@', '')}.png"
                )
                shown = curves[(curves.metric == metric) & (curves.start != "meta-plain")]
                plot_curves(
                    shown, "step", "value", "tasks", "start", path, "inner steps", f"{metric} during adaptation"
                )
            publish(self.logger, directory, {"meta_test": table, "adaptation_curves": curves}, images)
            print(
                f"\nmeta-test ({self.hparams.inner_steps} inner steps), written to {directory}:\n"
                f"{table.to_string(index=False)}"
            )

    def _report_dir(self) -> Path:
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "meta"

    # -- online replay -----------------------------------------------------------------------------
    def on_predict_epoch_start(self) -> None:
        self._online: list[pd.DataFrame] = []

    def predict_step(self, batch: list[TaskBatch], batch_idx: int) -> pd.DataFrame:
        """Per time step t: every user's event t is ranked by the static and the adapted policy
        (adapted from the start on events before t), from both starts."""
        rows = []
        for tasks in batch:
            known = int(tasks.name.split("/")[1])
            for start, loop in (("plain", self.plain_inner), ("meta", self.inner)):
                curve = self._curve(loop, tasks, self.hparams.inner_steps)
                for policy, point in (("static", curve[0]), ("adapted", curve[-1])):
                    rows.append((known, f"{start}/{policy}", point["ndcg"].sum().item(), len(point["ndcg"])))
        frame = pd.DataFrame(rows, columns=["known_events", "policy", "ndcg_sum", "users"])
        self._online.append(frame)
        return frame

    def on_predict_epoch_end(self) -> None:
        k = self.hparams.eval_k
        frame = (
            pd.concat(self._online)
            .groupby(["known_events", "policy"], sort=False)[["ndcg_sum", "users"]]
            .sum()
            .reset_index()
        )
        frame[f"ndcg@{k}"] = frame.ndcg_sum / frame.users
        curves = frame[["known_events", "policy", f"ndcg@{k}", "users"]]
        summary = curves.groupby("policy", sort=False)[f"ndcg@{k}"].mean().rename(f"mean_ndcg@{k}").reset_index()
        directory = self._report_dir()  # on every process: Trainer.log_dir broadcasts
        if self.trainer.is_global_zero:
            directory.mkdir(parents=True, exist_ok=True)
            png = directory / "online_replay.png"
            plot_curves(
                curves.assign(panel="online replay"),
                "known_events",
                f"ndcg@{k}",
                "panel",
                "policy",
                png,
                "events known before the ranked one",
                f"NDCG@{k} of each next event",
            )
            publish(
                self.logger, directory, {"online_replay": curves, "online_summary": summary}, {"online_replay": png}
            )
            print(
                f"\nonline replay (mean over time of NDCG@{k} of the next event), written to {directory}:\n"
                f"{summary.to_string(index=False)}"
            )


def mean_over_processes(gradient: dict[str, torch.Tensor], tasks: int) -> dict[str, torch.Tensor]:
    """The task-weighted mean of every DDP process's meta-gradient (each the mean over its `tasks`
    tasks): DDP averages gradients only in backward, and the meta stage sets them itself."""
    if world()[1] == 1:
        return gradient
    weights = torch.tensor(float(tasks), device=next(iter(gradient.values())).device)
    torch.distributed.all_reduce(weights)
    reduced = {}
    for name in sorted(gradient):  # the same order on every process
        total = gradient[name] * tasks
        torch.distributed.all_reduce(total)
        reduced[name] = total / weights
    return reduced
