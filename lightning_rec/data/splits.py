"""Train / validation / test splits as per-user positions into the flat sequences.

A split is where each user's training prefix ends and which event is each evaluated user's target;
the model input of a target is the events before it. Both protocols share this form, so every loader
and stage below works with either.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from lightning_rec.data.preprocess import SequenceData


@dataclasses.dataclass
class Split:
    train_end: torch.Tensor  # LongTensor[num_users]: training uses positions [0, train_end)
    val_users: torch.Tensor  # LongTensor[M]: evaluated users ...
    val_positions: torch.Tensor  # ... and the position of each one's validation target
    test_users: torch.Tensor
    test_positions: torch.Tensor


def leave_one_out(data: SequenceData) -> Split:
    """Last event is the test target, second to last the validation target, the rest is training.

    Users with fewer than 3 events cannot be evaluated; their whole sequence is training data.
    """
    lengths = data.lengths
    evaluable = lengths >= 3
    users = torch.nonzero(evaluable).squeeze(1)
    return Split(
        train_end=torch.where(evaluable, lengths - 2, lengths),
        val_users=users,
        val_positions=lengths[users] - 2,
        test_users=users,
        test_positions=lengths[users] - 1,
    )


def temporal_split(data: SequenceData, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """One global time cut for validation and one for test, as in deployment: train on the past,
    then predict each user's first event after the cut from everything before it."""
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"temporal split needs 0 < val_fraction, test_fraction and a sum < 1; got {val_fraction}, {test_fraction}"
        )
    t_val, t_test = torch.quantile(
        data.timestamps, torch.tensor([1 - val_fraction - test_fraction, 1 - test_fraction], dtype=torch.float64)
    ).tolist()
    user_of_event = torch.repeat_interleave(torch.arange(data.num_users), data.lengths)
    before_val = torch.zeros(data.num_users, dtype=torch.long).index_add_(
        0, user_of_event, (data.timestamps < t_val).long()
    )
    before_test = torch.zeros(data.num_users, dtype=torch.long).index_add_(
        0, user_of_event, (data.timestamps < t_test).long()
    )
    lengths = data.lengths
    # validation target: the first event in [t_val, t_test); test target: the first event at or after t_test
    val_ok = (before_val >= 1) & (before_val < before_test)
    test_ok = (before_test >= 1) & (before_test < lengths)
    return Split(
        train_end=before_val,
        val_users=torch.nonzero(val_ok).squeeze(1),
        val_positions=before_val[val_ok],
        test_users=torch.nonzero(test_ok).squeeze(1),
        test_positions=before_test[test_ok],
    )


def draw_cold_items(num_items: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """BoolTensor[num_items + 1]: a seeded random `fraction` of items 1..N to withhold from training
    (cold-start items); padding (0) is never cold."""
    if not 0 <= fraction < 1:
        raise ValueError(f"cold_item_fraction must be in [0, 1), got {fraction}")
    cold = torch.zeros(num_items + 1, dtype=torch.bool)
    chosen = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))[: round(fraction * num_items)]
    cold[chosen + 1] = True
    return cold


class TrainingSequences(NamedTuple):
    """What training sees: the sequences, each user's training end in them, and each event's
    position in its user's full sequence (where the RL stages start episodes and the simulator
    deals events to its environments)."""

    data: SequenceData
    train_end: torch.Tensor  # LongTensor[num_users]
    positions: torch.Tensor  # LongTensor like data.items


def training_sequences(data: SequenceData, train_end: torch.Tensor, cold: torch.Tensor) -> TrainingSequences:
    """The training prefixes with every event of a `cold` item removed, as sequences plus per-user
    training ends (their lengths), so windows and popularity are built from them unchanged. Evaluation
    keeps the full sequences: cold items appear in test histories and as test targets."""
    user_of_event = torch.repeat_interleave(torch.arange(data.num_users), data.lengths)
    position = torch.arange(len(data.items)) - data.offsets[user_of_event]
    if not cold.any():
        return TrainingSequences(data, train_end, position)
    keep = (position < train_end[user_of_event]) & ~cold[data.items]
    lengths = torch.bincount(user_of_event[keep], minlength=data.num_users)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
    ratings = data.ratings[keep] if data.ratings is not None else None
    kept = dataclasses.replace(
        data, items=data.items[keep], timestamps=data.timestamps[keep], ratings=ratings, offsets=offsets
    )
    return TrainingSequences(kept, lengths, position[keep])
