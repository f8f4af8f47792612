"""The inner loop: a few SGD steps per task on its support set, for a whole batch of tasks at once.

Parameters are plain tensors passed to `torch.func.functional_call`, the adapted ones with a leading
task dimension and `vmap`-ed, so no task ever deep-copies the model and the module's own parameters
(the meta-parameters) are only read. The support loss is the supervised next-item loss, or, with an
environment, a REINFORCE loss on episodes each task's adapted policy plays in the "train" simulator.

Every method takes `items`, the item table [N + 1, D] from `item_table()`, computed once for the whole
batch of tasks; None makes each call compute its own from the parameters it is given (the only way
when the item table itself adapts). Likewise, when only the head adapts, the recommender's states
(`AdaptivePolicy.body`) do not depend on the adapted weights: they are computed once per input, in
one plain batch over all tasks, and every step only runs the head on them (`hidden`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Literal

import torch
from torch.func import functional_call, grad, vmap

from lightning_rec.meta.adaptive_policy import AdaptivePolicy
from lightning_rec.meta.task_batch import TaskBatch
from lightning_rec.meta.task_environment import TaskEnvironment, by_task
from lightning_rec.rl.advantages import discounted_returns, mean_baseline
from lightning_rec.rl.reinforce import reinforce_loss
from lightning_rec.rl.rollout import Episodes
from lightning_rec.softmax import log_probs_at

Params = dict[str, torch.Tensor]
InnerLoss = Literal["next_item", "policy_gradient"]


def _dim(x: torch.Tensor | None) -> int | None:
    """vmap's in_dim for an optional per-task input."""
    return None if x is None else 0


def _reinforce_dims(inputs: tuple) -> tuple:
    """vmap's in_dims for `_reinforce(fast, frozen, items, *inputs)`, inputs from `_reinforce_inputs`."""
    return (0, None, None) + (0,) * (len(inputs) - 1) + (_dim(inputs[-1]),)


class InnerLoop:
    """Adapts `names` of `policy`'s parameters with `steps` steps of SGD at rate `lr`, or at the
    policy's learned per-weight rates where it has them (Meta-SGD, `AdaptivePolicy.learn_inner_rates`)."""

    def __init__(
        self,
        policy: AdaptivePolicy,
        names: list[str],
        steps: int,
        lr: float,
        loss: InnerLoss = "next_item",
        environment: TaskEnvironment | None = None,
    ):
        if steps < 0 or lr < 0:
            raise ValueError(f"inner loop needs steps >= 0 and lr >= 0, got steps={steps}, lr={lr}")
        if loss == "policy_gradient" and environment is None:
            raise ValueError("the policy-gradient inner loss needs an environment (a simulator checkpoint)")
        self.policy, self.names, self.steps, self.lr = policy, list(names), steps, lr
        self.loss, self.environment = loss, environment
        self.head_only = all(n.startswith("head.") for n in self.names)

    def split(self) -> tuple[Params, Params]:
        """(adapted, frozen) views of the policy's current parameters, still attached to autograd."""
        params = dict(self.policy.named_parameters())
        return {n: params[n] for n in self.names}, {n: p for n, p in params.items() if n not in self.names}

    def item_table(self) -> torch.Tensor | None:
        """The policy's item table [N + 1, D], attached to autograd, for a whole batch of tasks; None
        when the inner loop adapts the item encoder (each task then needs its own table).

        Called inside every task's every step instead, a text or hybrid item encoder recomputes its
        [N, 384] x [384, experts x D] projection each time, and in training mode once per task too
        (dropout under `vmap(randomness="different")` batches the table over tasks); once here, the
        backward through it also runs once. In training mode the table then has one dropout mask
        per batch of tasks, as in pretraining (one per batch of sequences)."""
        if any(n.startswith("recommender.item_encoder.") for n in self.names):
            return None
        return self.policy.recommender.item_encoder()

    def hidden(
        self, input: torch.Tensor, items: torch.Tensor | None, inference: bool = False, last: bool = False
    ) -> torch.Tensor | None:
        """The recommender's states of input [T, B, L] for every task at once (`AdaptivePolicy.body`),
        attached to autograd where it is on; None when they depend on the adapted weights."""
        if not self.head_only or items is None:
            return None
        return self.policy.body(input, items, inference, last)

    # -- losses of one task (vmapped over tasks) ---------------------------------------------------
    def _call(
        self,
        fast: Params,
        frozen: Params,
        items: torch.Tensor | None,
        *args: torch.Tensor | None,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return functional_call(self.policy, (fast, frozen), args, {"items": items, "hidden": hidden})

    def _supervised(self, with_query: bool):
        def loss(
            fast, frozen, items, support_input, support_target, query_input, query_target, support_hidden, query_hidden
        ):
            value = self._call(fast, frozen, items, support_input, support_target, hidden=support_hidden)
            if with_query:
                value = value + self._call(fast, frozen, items, query_input, query_target, hidden=query_hidden)
            return value

        return loss

    def _reinforce(
        self,
        fast: Params,
        frozen: Params,
        items: torch.Tensor | None,
        histories: torch.Tensor,
        blocked: torch.Tensor,
        slates: torch.Tensor,
        advantages: torch.Tensor,
        live: torch.Tensor,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """REINFORCE of one task's steps [M, ...]: each shown slate item is an action of its step's
        advantage, its log-probability in the softmax the slate was drawn from (the items `blocked`
        during the episode masked, at the environment's temperature); averaged over live steps."""
        scores = self._call(fast, frozen, items, histories, hidden=hidden).masked_fill(blocked, float("-inf"))
        log_pi = log_probs_at(scores / self.environment.temperature, slates)
        return reinforce_loss(log_pi, advantages.unsqueeze(1), slates != 0, live.sum().clamp(min=1))

    def _episodes(
        self, fast: Params, tasks: TaskBatch, environment: str, explore: bool, items: torch.Tensor | None
    ) -> Episodes:
        """Episodes of every task's policy `fast` (rows [T * U]) in the simulator of role `environment`,
        with the states it acted on when they are cached; tasks of different family environments
        are played one environment after another and joined back in task order."""
        groups = self.environment.groups(tasks)
        if len(groups) == 1:
            return self._episodes_in_one(fast, tasks, environment, explore, items)
        parts = []
        for rows in groups:
            part, weights = tasks.apply(lambda t, rows=rows: t[rows]), {n: w[rows] for n, w in fast.items()}
            parts.append(self._episodes_in_one(weights, part, environment, explore, items))
        players = len(parts[0].rewards) // len(groups[0])
        row_of_part = (torch.cat(groups).unsqueeze(1) * players + torch.arange(players)).flatten()
        return Episodes.cat(parts).rows(torch.argsort(row_of_part))

    def _episodes_in_one(
        self, fast: Params, tasks: TaskBatch, environment: str, explore: bool, items: torch.Tensor | None
    ) -> Episodes:
        """`_episodes` of tasks that share one family environment."""
        _, frozen = self.split()
        states = []

        def act(histories: torch.Tensor) -> torch.Tensor:
            hidden = self.hidden(histories, items, inference=True, last=True)
            states.append(hidden)
            play = vmap(
                lambda f, h, s: self._call(f, frozen, items, h, hidden=s),
                in_dims=(0, 0, _dim(hidden)),
                randomness="different",
            )
            return play(fast, histories, hidden)

        episodes = self.environment.play(environment, tasks, act, explore)
        if states[0] is None:
            return episodes
        return dataclasses.replace(episodes, states=torch.stack(states, 2).flatten(0, 1).squeeze(-2))

    def _reinforce_inputs(self, episodes: Episodes, tasks: int, items: torch.Tensor | None) -> tuple:
        """(histories, blocked, slates, advantages, live, hidden) per task [T, U * S, ...], its users'
        steps flattened. The states the episodes cached are constants; where autograd is on and the
        body is meta-trained (the query loss), they are computed again, in one batch, attached to it."""

        def steps(values: torch.Tensor) -> torch.Tensor:
            return by_task(values, tasks).flatten(1, 2)

        histories, hidden = steps(episodes.histories), episodes.states
        if (
            hidden is not None
            and torch.is_grad_enabled()
            and any(p.requires_grad for p in self.policy.recommender.parameters())
        ):
            hidden = self.hidden(histories, items, inference=True, last=True)
        elif hidden is not None:
            hidden = steps(hidden).unsqueeze(-2)
        returns = discounted_returns(episodes.rewards, episodes.valid, self.environment.discount)
        advantages = mean_baseline(by_task(returns, tasks), by_task(episodes.valid, tasks), dim=1)
        return (
            histories,
            steps(episodes.blocked()),
            steps(episodes.slates),
            advantages.flatten(1, 2),
            steps(episodes.valid),
            hidden,
        )

    def _in_environment(self, tasks: TaskBatch) -> bool:
        return self.loss == "policy_gradient" and bool((tasks.segment >= 0).all())

    # -- the loop ----------------------------------------------------------------------------------
    def fast_weights(
        self, tasks: TaskBatch, steps: int | None = None, with_query: bool = False, items: torch.Tensor | None = None
    ) -> Iterator[Params]:
        """Adapted parameters [T, ...] before the first step and after each of `steps` (default
        self.steps) steps on the support set (and the query rows too when `with_query`, as Reptile's
        inner loop trains on all of a task's data). Nothing returned requires grad but through learned
        rates: the steps' gradients count as constants (first order), the rates that scale them do not."""
        adapted, frozen = self.split()
        frozen = {n: p.detach() for n, p in frozen.items()}
        items = None if items is None else items.detach()
        rates = self.policy.learned_rates()
        fast = {n: p.detach().expand(len(tasks), *p.shape) for n, p in adapted.items()}
        with torch.no_grad():
            support_hidden = self.hidden(tasks.support_input, items)
            query_hidden = self.hidden(tasks.query_input, items) if with_query else None
        supervised = vmap(
            grad(self._supervised(with_query)),
            in_dims=(0, None, None, 0, 0, 0, 0, _dim(support_hidden), _dim(query_hidden)),
            randomness="different",
        )
        yield fast
        for _ in range(self.steps if steps is None else steps):
            current = {n: w.detach() for n, w in fast.items()}
            if self._in_environment(tasks):
                with torch.no_grad():
                    episodes = self._episodes(current, tasks, "train", True, items)
                    inputs = self._reinforce_inputs(episodes, len(tasks), items)
                reinforce = vmap(grad(self._reinforce), in_dims=_reinforce_dims(inputs), randomness="different")
                grads = reinforce(current, frozen, items, *inputs)
            else:
                grads = supervised(
                    current,
                    frozen,
                    items,
                    tasks.support_input,
                    tasks.support_target,
                    tasks.query_input,
                    tasks.query_target,
                    support_hidden,
                    query_hidden,
                )
            fast = {n: fast[n] - rates.get(n, self.lr) * grads[n] for n in fast}
            yield fast

    def adapt(self, tasks: TaskBatch, with_query: bool = False, items: torch.Tensor | None = None) -> Params:
        """The parameters after all inner steps."""
        *_, fast = self.fast_weights(tasks, with_query=with_query, items=items)
        return fast

    def query_loss(self, fast: Params, tasks: TaskBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        """Per-task query loss [T] at the given adapted parameters, differentiable with respect to
        them, to the policy's own (non-adapted) parameters and to `items`: the next-item loss on the
        query rows, or the REINFORCE loss of fresh episodes in the "train" simulator."""
        _, frozen = self.split()
        if self._in_environment(tasks):
            episodes = self._episodes(
                {n: w.detach() for n, w in fast.items()},
                tasks,
                "train",
                True,
                None if items is None else items.detach(),
            )
            inputs = self._reinforce_inputs(episodes, len(tasks), items)
            reinforce = vmap(self._reinforce, in_dims=_reinforce_dims(inputs), randomness="different")
            return reinforce(fast, frozen, items, *inputs)
        hidden = self.hidden(tasks.query_input, items)
        query = vmap(
            lambda f, i, t, s: self._call(f, frozen, items, i, t, hidden=s),
            in_dims=(0, 0, 0, _dim(hidden)),
            randomness="different",
        )
        return query(fast, tasks.query_input, tasks.query_target, hidden)

    @torch.no_grad()
    def query_hidden(self, tasks: TaskBatch, items: torch.Tensor | None) -> torch.Tensor | None:
        """The states `query_scores` needs, to compute once for several of its calls (a curve)."""
        return self.hidden(tasks.query_input, items, inference=True, last=True)

    @torch.no_grad()
    def query_scores(
        self, fast: Params, tasks: TaskBatch, items: torch.Tensor | None = None, hidden: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores of all items for every query row [T, Q, N + 1], history masked; `hidden` from
        `query_hidden` (computed here when not given)."""
        _, frozen = self.split()
        hidden = self.query_hidden(tasks, items) if hidden is None else hidden
        scores = vmap(
            lambda f, i, h, s: self._call(f, frozen, items, i, None, h, hidden=s),
            in_dims=(0, 0, 0, _dim(hidden)),
            randomness="different",
        )
        return scores(fast, tasks.query_input, tasks.query_history, hidden)

    @torch.no_grad()
    def returns(self, fast: Params, tasks: TaskBatch, items: torch.Tensor | None = None) -> torch.Tensor:
        """Return of greedy episodes in the "eval" simulator [T, U] (tasks it can play only)."""
        rows = self.environment.task_rows("eval", tasks)
        played = tasks.apply(lambda t: t[rows])
        episodes = self._episodes({n: w[rows] for n, w in fast.items()}, played, "eval", False, items)
        return by_task(episodes.rewards.sum(1), len(played))
