"""PolicyFineTuner: a pretrained recommender fine-tuned as a slate policy against a user simulator."""

from __future__ import annotations

import collections
import contextlib
import math

import lightning as L
import torch
from torch.nn.parallel import DistributedDataParallel

from lightning_rec.checkpoints import read_checkpoint
from lightning_rec.distributed import average_gradients, most, world
from lightning_rec.metrics import ranking_metrics
from lightning_rec.rl.agents import RecommenderAgent
from lightning_rec.rl.algorithm import PolicyAlgorithm
from lightning_rec.rl.behaviour import UserBehaviour
from lightning_rec.rl.environments import Environment, stage_environment
from lightning_rec.rl.episode_states import check_positions, states_at_slots
from lightning_rec.rl.rollout import Episodes, rollout
from lightning_rec.rl.session_head import CategoryRecency, head_categories
from lightning_rec.stages.pretraining import (
    RECOMMENDER_KEY,
    SequentialRecommender,
    load_recommender,
    recommender_entry,
)

SESSION_KEY = "session"
SESSION_DEFAULTS = {"behaviour": None, "slate_size": 10, "context_len": 30}  # None: UserBehaviour()


def trained_session(path: str) -> dict | None:
    """{behaviour, slate_size, context_len} a PolicyFineTuner checkpoint was trained under (what its
    evaluation must play), or None when the checkpoint is not a fine-tuned policy's."""
    return read_checkpoint(path).get(SESSION_KEY)


class PolicyFineTuner(L.LightningModule):
    """Fine-tunes the SequentialRecommender in the `pretrained` checkpoint as a stochastic slate
    policy: a slate is `slate_size` items drawn without replacement from the softmax of its next-item
    scores divided by `temperature`, with consumed and already shown items masked. Below 1 the
    sampled slates stay close to the greedy top-K the policy is judged by, so the updates reorder its
    top items instead of spreading over the catalogue's long tail. The `algorithm` (Reinforce,
    OffPolicyReinforce, PPO, ...) is a YAML component.

    Episodes are played in the "train" simulator of the `simulator` checkpoint (never its "eval"
    one), or of `environment` (rl/environments.py; then `simulator: null`), starting where the
    batch's logged windows end, for the windows of that simulator's users; `behaviour` sets its
    choice and leave rules. The policy's state is its
    encoder's output over the last `context_len` logged items plus the episode's clicks (see
    rl/episode_states), so context_len + behaviour.max_steps must fit the encoder's max_len. RL
    runs the networks without dropout. Validation and test are the recommender's offline ranking
    (val/ndcg@10, ...), to see how much next-item accuracy RL costs. Under DDP each process plays the
    users of its share of the windows and every step averages the gradients over the processes.

    With `supervised_coef` > 0 every optimiser step also takes supervised_coef x the pretraining
    loss on `supervised_windows` logged windows drawn from the batch (as PPO-ptx does), which holds
    the next-item ranking where the logs say it is right and leaves RL free elsewhere.

    Each update plays the users of `windows_per_batch` training windows (the data module's batch size
    unless given) that belong to the training environment.

    A `session_head` (rl/session_head.CategoryRecency) adds learned weights over the categories of
    the episode's recent clicks to the sampling logits (it needs the data module's `category`), at
    its own learning rate; it is the policy's, not the recommender's, so the KL anchor compares the
    two recommenders under the same head and the offline ranking does not see it.

    The checkpoint carries the fine-tuned recommender whole: `load_recommender` reads it back
    without this stage (and without the `pretrained` checkpoint); the session it was trained under,
    head included, is `trained_session`'s.
    """

    def __init__(
        self,
        pretrained: str,
        simulator: str | None,
        algorithm: PolicyAlgorithm,
        behaviour: UserBehaviour | None = None,
        slate_size: int = SESSION_DEFAULTS["slate_size"],
        context_len: int = SESSION_DEFAULTS["context_len"],
        temperature: float = 1.0,
        lr: float = 1e-4,
        head_lr: float = 1e-3,
        max_grad_norm: float = 1.0,
        supervised_coef: float = 0.0,
        supervised_windows: int = 32,
        seed: int = 0,
        eval_ks: list[int] = [10, 20],
        environment: Environment | None = None,
        windows_per_batch: int | None = None,
        session_head: CategoryRecency | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.train_batch_size = windows_per_batch
        self.environment = stage_environment(environment, simulator)
        self.automatic_optimization = False
        self.behaviour = behaviour if behaviour is not None else UserBehaviour()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if supervised_coef < 0 or supervised_windows < 1:
            raise ValueError(
                f"supervised_coef must be >= 0 and supervised_windows >= 1, "
                f"got {supervised_coef} and {supervised_windows}"
            )
        self.algorithm, self.session_head = algorithm, session_head
        self.recommender: SequentialRecommender | None = None  # the `pretrained` policy, loaded in setup
        self.generator: torch.Generator | None = None
        self.categories: torch.Tensor | None = None  # the items' categories, for the session head (on_fit_start)

    # -- the policy ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.recommender is None:
            self.load_pretrained()

    def load_pretrained(self) -> None:
        """Load the `pretrained` policy and size what depends on it: the algorithm's heads and the
        metrics (in setup, not the constructor, so instantiating the stage reads no checkpoint)."""
        self.recommender = load_recommender(self.hparams.pretrained)
        check_positions(self.recommender, self.hparams.context_len, self.behaviour.max_steps)
        self.state_dim = self.recommender.sequence_encoder.dim
        self.algorithm.build(self)
        num_items = self.recommender.num_items
        self.val_metrics = ranking_metrics(self.hparams.eval_ks, num_items, prefix="val/")
        self.test_metrics = ranking_metrics(self.hparams.eval_ks, num_items, prefix="test/")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[RECOMMENDER_KEY] = recommender_entry(self.recommender, "recommender.")
        checkpoint[SESSION_KEY] = {
            "behaviour": self.behaviour,
            "slate_size": self.hparams.slate_size,
            "context_len": self.hparams.context_len,
            "head": self.session_head,
        }

    # -- the simulator -------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        self.train_simulator = self.environment.simulator(
            "train", datamodule, self.behaviour, self.hparams.seed, self.device
        )
        self.generator = torch.Generator(self.device).manual_seed(self.hparams.seed)
        self.categories = head_categories(self.session_head, datamodule.catalog.categories)
        ratings = datamodule.data.ratings
        self.rating_range = (
            None if ratings is None else torch.tensor([float(ratings.min()), float(ratings.max())], device=self.device)
        )

    def random_generators(self) -> dict[str, torch.Generator]:
        """The slates' and the training simulator's dice (resume.RandomState keeps them in the checkpoints)."""
        if self.generator is None:
            return {}
        return {"policy": self.generator, "simulator": self.train_simulator.generator}

    # -- what the algorithms use (rl.algorithm.PolicyContext) ---------------------------------------
    @property
    def slate_size(self) -> int:
        return self.hparams.slate_size

    def play(self, batch: dict) -> tuple[Episodes, dict[str, float]]:
        """Sampled episodes in the training simulator from the batch's windows of its users."""
        keep = self.train_simulator.allowed[batch["user"]]
        if not keep.any():
            raise ValueError("the batch holds no window of the training simulator's users; raise windows_per_batch")
        agent = RecommenderAgent(
            self.recommender,
            self.hparams.context_len,
            self.behaviour.max_steps,
            self.hparams.temperature,
            self.session_head,
            self.categories,
        )
        episodes = rollout(
            self.train_simulator,
            agent,
            batch["user"][keep],
            batch["position"][keep, -1] + 1,  # episodes start right after the window
            self.hparams.slate_size,
            sample=True,
            generator=self.generator,
        )
        steps = episodes.valid.sum()
        logs = {
            "episodes": float(keep.sum()),
            "return": float(episodes.rewards.sum(1).mean()),
            "ctr": float(episodes.clicks.any(-1).sum() / steps),
            "length": float(steps / keep.sum()),
        }
        return episodes, logs

    def progress(self, steps: int) -> torch.Tensor:
        """[1, steps]: each step's share of the longest episode, the value heads' time input."""
        return (torch.arange(steps, device=self.device) / self.behaviour.max_steps).unsqueeze(0)

    def episode_states(
        self, episodes: Episodes, rows: torch.Tensor, recommender: SequentialRecommender | None = None
    ) -> torch.Tensor:
        """The states [b, T, D] of the episodes' steps for users `rows`: one pass over their slot rows."""
        recommender = self.recommender if recommender is None else recommender
        return states_at_slots(recommender, episodes.sequence[rows], episodes.slots[rows])

    def episode_logits(
        self, episodes: Episodes, rows: torch.Tensor, recommender: SequentialRecommender | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [b, T, D], scores / temperature [b, T, N + 1] plus the session head's bias, with
        the items masked during the episode at -inf: the logits of the slates' softmax) for users
        `rows`, under this policy or another `recommender` (with this policy's head)."""
        recommender = self.recommender if recommender is None else recommender
        hidden = self.episode_states(episodes, rows, recommender)
        logits = (hidden / self.hparams.temperature) @ recommender.item_encoder().T
        if self.session_head is not None:
            logits = logits + self._session_bias(episodes, rows)
        return hidden, logits.masked_fill_(episodes.blocked(rows), float("-inf"))

    def _session_bias(self, episodes: Episodes, rows: torch.Tensor) -> torch.Tensor:
        """[b, T, N + 1]: the head's bias at each step, from the clicks before it (as the rollout's agent saw them)."""
        context_len = self.hparams.context_len
        clicks = episodes.sequence[rows, context_len:]
        count = episodes.slots[rows] - context_len + 1  # [b, T]: clicks before each step
        steps = count.shape[1]
        bias = self.session_head.bias(
            clicks.repeat_interleave(steps, 0), count.reshape(-1), self.categories.to(clicks.device)
        )
        return bias.view(len(rows), steps, -1)

    def logged_rewards(self, batch: dict) -> torch.Tensor:
        """[B, L]: the reward of each logged target (the behaviour's satisfaction of its rating)."""
        clicked = batch["target"] != 0
        rating = batch.get("rating") if self.rating_range is not None else None
        return self.behaviour.satisfaction(rating, self.rating_range, clicked)

    def minibatches(self, size: int, minibatch: int, shuffle: bool) -> list[torch.Tensor]:
        """The episodes' indices in minibatches of `minibatch`; under DDP as many (near-equal) minibatches
        on every process as the process with the most episodes needs, since each step averages gradients."""
        order = (
            torch.randperm(size, generator=self.generator, device=self.device)
            if shuffle
            else torch.arange(size, device=self.device)
        )
        if world()[1] == 1:
            return list(order.split(minibatch))
        return list(order.tensor_split(most(math.ceil(size / minibatch))))

    def supervised_loss(self, batch: dict) -> torch.Tensor:
        """The pretraining loss on `supervised_windows` random windows of the batch."""
        windows = torch.randperm(len(batch["input"]), generator=self.generator, device=self.device)
        windows = windows[: self.hparams.supervised_windows]
        return self.recommender.pretraining_loss(batch["input"][windows], batch["target"][windows])

    # -- steps ---------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        """Backpropagate each of the algorithm's gradients; before each optimiser step add the
        supervised term, then clip and step."""
        self.eval()  # RL runs the networks without dropout: sampling and update must see the same policy
        optimizer, logs = self.optimizers(), collections.Counter()
        for gradient in self.algorithm.update(self, batch):
            self._backward(gradient.loss)
            logs.update(gradient.logs)  # adds them up
            if not gradient.step:
                continue
            if self.hparams.supervised_coef > 0:
                loss = self.supervised_loss(batch)
                self._backward(self.hparams.supervised_coef * loss)
                self.log("train/supervised_loss", loss.detach(), batch_size=self.hparams.supervised_windows)
            average_gradients(p for group in optimizer.param_groups for p in group["params"])
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad()
        self.log_dict({f"train/{key}": value for key, value in logs.items()}, batch_size=len(batch["user"]))

    def _backward(self, loss: torch.Tensor) -> None:
        """Backpropagate outside DDP's gradient sync: an update backpropagates several losses that use
        different parameters (policy, value heads), which DDP's reducer refuses; the gradients are
        averaged over the processes before each step instead."""
        model = self.trainer.strategy.model
        with model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext():
            self.manual_backward(loss)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def _evaluate(self, batch: dict, metrics) -> None:
        metrics.update(self.recommender.score(batch["input"], batch["history"]), batch["target"])
        self.log_dict(metrics, prog_bar=True, batch_size=len(batch["target"]))

    def configure_optimizers(self):
        policy = [p for p in self.recommender.parameters() if p.requires_grad]
        heads = [p for p in self.algorithm.parameters() if p.requires_grad]
        groups = [{"params": policy, "lr": self.hparams.lr}, {"params": heads, "lr": self.hparams.head_lr}]
        if self.session_head is not None:
            groups.append({"params": list(self.session_head.parameters()), "lr": self.session_head.lr})
        return torch.optim.Adam(groups)
