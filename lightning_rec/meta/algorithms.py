"""Outer loops: turn a batch of tasks into one meta-gradient for the policy's parameters.

The LightningModule hands that gradient to an ordinary optimizer, so the outer step size, momentum
and clipping are the optimizer's, and both algorithms are chosen by `class_path` in YAML.
"""

from __future__ import annotations

import torch

from lightning_rec.meta.inner import InnerLoop, Params
from lightning_rec.meta.task_batch import TaskBatch


class MetaAlgorithm:
    """`meta_gradient` returns, per parameter name, the direction to descend (absent = no update),
    and the mean query loss after adaptation for logging."""

    def meta_gradient(self, loop: InnerLoop, tasks: TaskBatch) -> tuple[Params, torch.Tensor]:
        raise NotImplementedError


class FOMAML(MetaAlgorithm):
    """First-order MAML: adapt on the support set, then take the gradient of the query loss at the
    adapted parameters as the gradient at the start (the second-order term is dropped). Parameters
    the inner loop does not adapt get their ordinary query-loss gradient, so a frozen body is
    meta-trained too (as in ANIL). Learned inner rates (Meta-SGD) get the query gradient through
    the inner steps they scale: -sum over tasks and steps of query gradient x step gradient."""

    def meta_gradient(self, loop: InnerLoop, tasks: TaskBatch) -> tuple[Params, torch.Tensor]:
        items = loop.item_table()  # once: the backward through the item encoder runs once as well
        adapted = loop.adapt(tasks, items=items)  # attached to the learned rates, if any
        fast = {n: w.detach().requires_grad_() for n, w in adapted.items()}
        frozen = {n: p for n, p in loop.split()[1].items() if p.requires_grad}
        loss = loop.query_loss(fast, tasks, items).mean()
        grads = torch.autograd.grad(loss, [*fast.values(), *frozen.values()], allow_unused=True)
        gradient = {n: g.sum(0) for n, g in zip(fast, grads)}  # the mean over tasks is in the loss
        gradient.update({n: g for n, g in zip(frozen, grads[len(fast) :]) if g is not None})
        rates = loop.policy.learned_rates()
        if rates:
            rate_grads = torch.autograd.grad(
                list(adapted.values()), [rates[n] for n in adapted], grads[: len(fast)], allow_unused=True
            )
            gradient.update({loop.policy.rate_name(n): g for n, g in zip(adapted, rate_grads) if g is not None})
        return gradient, loss.detach()


class Reptile(MetaAlgorithm):
    """Reptile: adapt on all of each task's data (support and query), then move the start towards
    the mean adapted parameters; the meta-gradient is start - mean(adapted). Only adapted
    parameters move."""

    def meta_gradient(self, loop: InnerLoop, tasks: TaskBatch) -> tuple[Params, torch.Tensor]:
        with torch.no_grad():
            items = loop.item_table()
        fast = loop.adapt(tasks, with_query=True, items=items)
        adapted, _ = loop.split()
        with torch.no_grad():
            loss = loop.query_loss(fast, tasks, items).mean()
        return {n: adapted[n].detach() - fast[n].mean(0) for n in fast}, loss
