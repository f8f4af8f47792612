"""BERT4Rec's masked-item (cloze) objective, for bidirectional sequence encoders."""

from __future__ import annotations

import torch

from lightning_rec.objectives.next_item import FullSoftmax


class MaskedItemObjective(FullSoftmax):
    """Hide a random `mask_prob` of each training sequence's items and predict them from both sides,
    with cross-entropy over all items. At inference a masked position is appended after the history
    and its prediction is the next item.

    The mask token is item 0. Its row of the item table is zeros, the encoder's padding mask hides
    it from every other position, and a masked query still attends to all real items, so the
    masked position carries only its position: what BERT4Rec's [MASK] embedding is for, without
    adding a token to the catalogue.
    """

    def __init__(self, mask_prob: float = 0.2):
        super().__init__()
        if not 0 < mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.mask_prob = mask_prob

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's last L events with some masked; targets only at masked positions. Every row
        with items gets at least one mask (its last item if the draw chose none), so no row is wasted."""
        sequence = target  # window[1:]: the most recent L events
        real = sequence != 0
        masked = (torch.rand(sequence.shape, device=sequence.device) < self.mask_prob) & real
        masked[:, -1] |= ~masked.any(1) & real[:, -1]
        return sequence.masked_fill(masked, 0), sequence * masked

    def prepare_inference(self, input: torch.Tensor) -> torch.Tensor:
        return torch.cat([input[:, 1:], torch.zeros_like(input[:, :1])], dim=1)
