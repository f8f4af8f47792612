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
    meta-trained too (as in ANIL). What the adapted values are themselves a function of gets the
    query gradient through them: Meta-SGD's learned rates through the inner steps they scale (-sum
    over tasks and steps of query gradient x step gradient), a ContextHead's summary network
    through the context it computed."""

    def meta_gradient(self, loop: InnerLoop, tasks: TaskBatch) -> tuple[Params, torch.Tensor]:
        items = loop.item_table()  # once: the backward through the item encoder runs once as well
        adapted = loop.adapt(tasks, items=items)  # attached to the learned rates or a context's summary, if any
        fast = {n: w.detach().requires_grad_() for n, w in adapted.items()}
        frozen = {n: p for n, p in loop.split()[1].items() if p.requires_grad}
        loss = loop.query_loss(fast, tasks, items).mean()
        grads = torch.autograd.grad(loss, [*fast.values(), *frozen.values()], allow_unused=True)
        params = dict(loop.policy.named_parameters())
        gradient = {n: g.sum(0) for n, g in zip(fast, grads) if n in params}  # the mean over tasks is in the loss
        gradient.update({n: g for n, g in zip(frozen, grads[len(fast) :]) if g is not None})
        attached = [n for n in adapted if adapted[n].requires_grad]
        if attached:  # what the adaptation itself is a function of gets the query gradient through it
            sources = {n: p for n, p in params.items() if p.requires_grad}
            through = torch.autograd.grad(
                [adapted[n] for n in attached],
                list(sources.values()),
                [grads[list(fast).index(n)] for n in attached],
                allow_unused=True,
            )
            for n, g in zip(sources, through):
                if g is not None:
                    gradient[n] = gradient.get(n, 0) + g
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
