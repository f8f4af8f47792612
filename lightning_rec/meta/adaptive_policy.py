"""The network the meta-learner adapts: a pretrained recommender plus an optional state head,
with one `forward` that torch.func can call with any set of (batched) parameters."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_rec.meta.adaptive_heads import StateHead
from lightning_rec.scoring import catalogue_scores, mask_scores

Adapt = Literal["all", "top_layers", "head"]


class AdaptivePolicy(nn.Module):
    """`recommender` (a built SequentialRecommender) with `head` applied to its user states.

    forward(input, target) is the next-item cross-entropy over all items: at every position with a
    non-zero target when target is [B, L], at the last position only when it is [B] (summed over
    non-zero targets, divided by their count: rows without targets give 0, not NaN, and no shape
    depends on the data, so it runs under vmap). forward(input, history=...) scores all items for
    the next item, as `SequentialRecommender.score` does, plus the head. Both take the item table
    `items` when the caller has it already (the inner loop computes it once for a batch of tasks),
    and `hidden`, the recommender's states `body(input)` (before the head), when it has those: with
    only the head adapting they are the same for every task and inner step.
    """

    def __init__(self, recommender: nn.Module, head: StateHead | None = None):
        super().__init__()
        self.recommender, self.head = recommender, head
        self.inner_rates: nn.ParameterDict | None = None
        if head is not None and not head.is_built:
            head.build(recommender.sequence_encoder.dim)

    def learn_inner_rates(self, names: list[str], lr: float) -> None:
        """Meta-SGD: one inner-loop learning rate per weight of the adapted parameters `names`,
        starting at `lr`, meta-learned with the start, so the meta-learner also chooses how far
        each weight moves for a new user. They are parameters of this module (`inner_rates.*`),
        so the outer optimizer, the meta-gradient and checkpoints treat them like the others;
        the forward pass never reads them."""
        params = dict(self.named_parameters())
        self.inner_rates = nn.ParameterDict(
            {n.replace(".", ":"): nn.Parameter(torch.full_like(params[n], lr)) for n in names}
        )

    def learned_rates(self) -> dict[str, nn.Parameter]:
        """{adapted parameter name: its learned learning rate}; empty without `learn_inner_rates`."""
        return {} if self.inner_rates is None else {k.replace(":", "."): rate for k, rate in self.inner_rates.items()}

    @staticmethod
    def rate_name(name: str) -> str:
        """The parameter name of adapted parameter `name`'s learned learning rate."""
        return "inner_rates." + name.replace(".", ":")

    def body(
        self, input: torch.Tensor, items: torch.Tensor, inference: bool = False, last: bool = False
    ) -> torch.Tensor:
        """The recommender's states [..., L, D] (`last`: [..., 1, D]) for input [..., L] with any
        leading dimensions, before the head; `inference` when they are for scoring (forward without
        a target), whose input the objective may prepare first."""
        if inference:
            input = self.recommender.objective.prepare_inference(input.flatten(0, -2)).view(*input.shape[:-1], -1)
        states = self.recommender.encode(input.flatten(0, -2), items, last)
        return states.view(*input.shape[:-1], *states.shape[1:])

    def states(
        self,
        input: torch.Tensor,
        items: torch.Tensor,
        hidden: torch.Tensor | None = None,
        latest: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The head's states [..., S, D]; the head also sees the vector of the latest item at each of
        the S positions, from `latest` (the input before the objective prepared it) or `input`."""
        state = self.recommender.encode(input, items) if hidden is None else hidden
        if self.head is None:
            return state
        latest = input if latest is None else latest
        return self.head(state, items[latest[..., -state.shape[-2] :]])

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor | None = None,
        history: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        items = self.recommender.item_encoder() if items is None else items
        if target is not None:
            states = self.states(input, items, hidden)
            logits = (states if target.ndim == input.ndim else states[:, -1]) @ items.T
            logits = mask_scores(logits)
            loss = F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=0, reduction="sum")
            return loss / (target != 0).sum().clamp(min=1)
        latest, input = input, self.recommender.objective.prepare_inference(input)
        hidden = self.recommender.encode(input, items, last=True) if hidden is None else hidden
        history = history if self.recommender.hparams.mask_history else None
        states = self.states(input, items, hidden, latest)[:, -1]
        return catalogue_scores(states, items, input, self.recommender.popularity, history)

    def adapted_names(self, adapt: Adapt, num_top_layers: int = 1) -> list[str]:
        """Names of the parameters the inner loop changes: every one, the sequence encoder's top
        layers as it names them (`top_layer_prefixes`) plus the head, or the head alone."""
        names = [n for n, p in self.named_parameters() if p.requires_grad and not n.startswith("inner_rates.")]
        if adapt == "all":
            return names
        if self.head is None and adapt == "head":
            raise ValueError("adapt='head' needs a head (UserHead or Adapter)")
        prefixes = ["head."]
        if adapt == "top_layers":
            try:
                top = self.recommender.sequence_encoder.top_layer_prefixes(num_top_layers)
            except ValueError as error:
                raise ValueError(f"adapt='top_layers' with num_top_layers={num_top_layers}: {error}") from error
            prefixes += [f"recommender.sequence_encoder.{prefix}" for prefix in top]
        return [n for n in names if any(n.startswith(p) for p in prefixes)]
