"""`StopOnNonFinite`: training stops with a message naming the step as soon as a loss or a gradient
is NaN or infinite, before the optimizer writes it into the weights (and before any checkpoint of
them), instead of training on as a NaN model. The CLI adds it to every Trainer."""

from __future__ import annotations

import lightning as L
import torch


class NonFiniteTraining(RuntimeError):
    """A loss or gradient became NaN or infinite; the message names the epoch, step and batch."""


class StopOnNonFinite(L.Callback):
    """Checks each loss as it is backpropagated and all gradients just before each optimizer step
    (which covers stages that set gradients themselves, as the meta stage does). The decision is
    taken jointly by all processes, so under DDP or FSDP every rank stops at the same step. Steps
    under a float16 gradient scaler are left to the scaler, which skips them itself."""

    def __init__(self):
        self.bad_loss: float | None = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if self.bad_loss is None and not torch.isfinite(loss.detach()).all():
            self.bad_loss = float(loss.detach().float().sum())

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = {name: p.grad for name, p in pl_module.named_parameters() if p.grad is not None}
        finite = bool(torch.isfinite(torch.nn.utils.get_total_norm(list(grads.values())))) if grads else True
        if not trainer.strategy.reduce_boolean_decision(self.bad_loss is not None or not finite, all=False):
            return
        where = (
            f"epoch {trainer.current_epoch}, global step {trainer.global_step} "
            f"(batch {trainer.fit_loop.epoch_loop.batch_idx})"
        )
        if self.bad_loss is not None:
            what = f"the loss is {self.bad_loss}"
        elif not finite:
            names = [name for name, grad in grads.items() if not torch.isfinite(grad).all()]
            what = f"the gradients of {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} are not finite"
        else:
            what = "another process's loss or gradients are not finite"
        raise NonFiniteTraining(
            f"training stopped at {where}: {what}; nothing was written for this step "
            "(lower the learning rate, clip gradients, or look for extreme values in the inputs)"
        )
