"""The inner loop: a few SGD steps per task on its support set, for a whole batch of tasks at once.

Parameters are plain tensors passed to `torch.func.functional_call`, the adapted ones with a leading
task dimension and `vmap`-ed, so no task ever deep-copies the model and the module's own parameters
(the meta-parameters) are only read.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.func import functional_call, grad, vmap

from lightning_rec.meta.policy import AdaptivePolicy
from lightning_rec.meta.tasks import TaskBatch

Params = dict[str, torch.Tensor]


class InnerLoop:
    """Adapts `names` of `policy`'s parameters with `steps` steps of SGD at rate `lr`."""

    def __init__(self, policy: AdaptivePolicy, names: list[str], steps: int, lr: float):
        if steps < 0 or lr < 0:
            raise ValueError(f"inner loop needs steps >= 0 and lr >= 0, got steps={steps}, lr={lr}")
        self.policy, self.names, self.steps, self.lr = policy, list(names), steps, lr

    def split(self) -> tuple[Params, Params]:
        """(adapted, frozen) views of the policy's current parameters, still attached to autograd."""
        params = dict(self.policy.named_parameters())
        return {n: params[n] for n in self.names}, {n: p for n, p in params.items() if n not in self.names}

    def _loss(self, fast: Params, frozen: Params, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional_call(self.policy, (fast, frozen), (input, target))

    def _task_loss(self, with_query: bool):
        def loss(fast, frozen, support_input, support_target, query_input, query_target):
            value = self._loss(fast, frozen, support_input, support_target)
            if with_query:
                value = value + self._loss(fast, frozen, query_input, query_target)
            return value

        return loss

    def fast_weights(self, tasks: TaskBatch, steps: int | None = None, with_query: bool = False) -> Iterator[Params]:
        """Adapted parameters [T, ...] before the first step and after each of `steps` (default
        self.steps) steps on the support set (and the query rows too when `with_query`, as Reptile's
        inner loop trains on all of a task's data). Nothing returned requires grad."""
        adapted, frozen = self.split()
        frozen = {n: p.detach() for n, p in frozen.items()}
        fast = {n: p.detach().expand(len(tasks), *p.shape) for n, p in adapted.items()}
        step = vmap(grad(self._task_loss(with_query)), in_dims=(0, None, 0, 0, 0, 0), randomness="different")
        yield fast
        for _ in range(self.steps if steps is None else steps):
            grads = step(fast, frozen, tasks.support_input, tasks.support_target, tasks.query_input, tasks.query_target)
            fast = {n: fast[n] - self.lr * grads[n] for n in fast}
            yield fast

    def adapt(self, tasks: TaskBatch, with_query: bool = False) -> Params:
        """The parameters after all inner steps."""
        for fast in self.fast_weights(tasks, with_query=with_query):
            pass
        return fast

    def query_loss(self, fast: Params, tasks: TaskBatch) -> torch.Tensor:
        """Per-task query loss [T] at the given adapted parameters, differentiable with respect to
        them and to the policy's own (non-adapted) parameters."""
        _, frozen = self.split()
        loss = vmap(self._loss, in_dims=(0, None, 0, 0), randomness="different")
        return loss(fast, frozen, tasks.query_input, tasks.query_target)

    @torch.no_grad()
    def query_scores(self, fast: Params, tasks: TaskBatch) -> torch.Tensor:
        """Scores of all items for every query row [T, Q, N + 1], history masked."""
        _, frozen = self.split()
        scores = vmap(lambda f, i, h: functional_call(self.policy, (f, frozen), (i, None, h)), randomness="different")
        return scores(fast, tasks.query_input, tasks.query_history)
