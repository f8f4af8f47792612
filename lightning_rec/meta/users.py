"""User representations to segment users by: the pretrained encoder's state, or genre taste."""

from __future__ import annotations

import torch

from lightning_rec.data.datasets import gather_windows
from lightning_rec.data.errors import DataError
from lightning_rec.data.preprocess import SequenceData


@torch.no_grad()
def encoder_states(
    recommender, data: SequenceData, train_end: torch.Tensor, max_len: int = 50, batch_size: int = 256
) -> torch.Tensor:
    """The pretrained sequence encoder's state after each user's last `max_len` training events,
    [num_users, D]: what the policy itself believes about the user, so segments group users the
    policy treats alike."""
    was_training = recommender.training
    recommender.eval()
    users = torch.arange(data.num_users)
    starts = data.offsets[:-1]
    states = []
    for chunk in users.split(batch_size):
        window = gather_windows(data.items, starts[chunk], starts[chunk] + train_end[chunk], max_len)
        states.append(recommender.encode(window.to(recommender.device), last=True)[:, -1].cpu())
    recommender.train(was_training)
    return torch.cat(states)


def genre_taste(
    data: SequenceData, train_end: torch.Tensor, column: str = "genres", separator: str = "|"
) -> torch.Tensor:
    """Share of each genre among each user's training events, [num_users, num_genres]."""
    if column not in data.item_info.columns:
        raise DataError(f"genre segments need an item column {column!r}; the items have {list(data.item_info.columns)}")
    genres = data.item_info[column].fillna("").astype(str).str.get_dummies(sep=separator)
    if genres.shape[1] == 0:
        raise DataError(f"item column {column!r} names no genre in any row")
    item_genres = torch.cat([torch.zeros(1, genres.shape[1]), torch.as_tensor(genres.to_numpy(), dtype=torch.float)])
    user_of_event = torch.repeat_interleave(torch.arange(data.num_users), data.lengths)
    position = torch.arange(len(data.items)) - data.offsets[user_of_event]
    train = position < train_end[user_of_event]
    taste = torch.zeros(data.num_users, genres.shape[1]).index_add_(
        0, user_of_event[train], item_genres[data.items[train]]
    )
    return taste / taste.sum(1, keepdim=True).clamp(min=1e-9)
