"""A ground-truth user response: each (user, item)'s value read from a user x item reward matrix
(KuaiRec's fully observed small_matrix, Coat's randomly exposed ratings completed by a model)
instead of predicted by a learned ResponseModel.

`MatrixResponse` answers the calls a UserSimulator makes of its response model (start, advance,
log_normaliser, click_logits, rating), so the same simulator plays it under the same UserBehaviour
(modes, quit rule, temper, patience) and the same rollout; `reward_matrix` builds the matrix in a
data module's item ids from a data source's (user, item, rating) events.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from lightning_rec.data.errors import DataError
from lightning_rec.data.preprocess import SequenceData
from lightning_rec.rl.matrix_factorisation import fit_matrix_factorisation

ROW_CHUNK = 4096  # users per block when the completion fills whole catalogue rows


class MatrixResponse(nn.Module):
    """Clicks and ratings of the users with a row in `values` [R, N + 1] (column 0: padding).

    A user's state is their row index ([B, 1]); it never changes, since the matrix holds each
    pair's value whatever was consumed before. The rating of an item is its value; its click
    logit is `click_scale` x (value - `click_threshold`), so that under UserBehaviour's choice
    (no-click utility 0) an item shown alone is clicked with probability 1/2 at the threshold.
    With `no_click_utility: -.inf` every slate gets one click, as in EasyRL4Rec, where every
    recommended item is consumed and earns its value.
    """

    def __init__(
        self,
        values: torch.Tensor,
        rows: torch.Tensor,
        rating_range: tuple[float, float],
        click_threshold: float = 0.0,
        click_scale: float = 1.0,
    ):
        super().__init__()
        self.register_buffer("values", values.float())
        self.register_buffer("rows", rows.long())  # [num_users]: each data user's row, -1 for none
        self.register_buffer("rating_range", torch.tensor([float(rating_range[0]), float(rating_range[1])]))
        self.click_threshold, self.click_scale = click_threshold, click_scale
        self.has_ratings = True

    def start(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Each user's state: their matrix row [B, 1] (the history does not change it)."""
        return self.rows[users].unsqueeze(1)

    def advance(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return state

    def log_normaliser(self, state: torch.Tensor) -> torch.Tensor:
        return torch.zeros(state.shape[:-1], device=state.device)

    def rating(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The matrix's values of items [B, K] for the users of states [B, 1]."""
        return self.values[state, items]

    def click_logits(
        self, state: torch.Tensor, items: torch.Tensor, normaliser: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.click_scale * (self.rating(state, items) - self.click_threshold)


def reward_matrix(
    events: pd.DataFrame,
    data: SequenceData,
    where: str,
    clip: tuple[float, float] | None = None,
    missing: float | Literal["mf"] = 0.0,
    mf_dim: int = 16,
    mf_l2: float = 0.1,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values [R, N + 1], rows [num_users], available [N + 1]) of `events` (columns user, item,
    rating, with original ids; `where` names them in errors), in `data`'s user and item indices.

    Pairs whose user or item is not in `data` are dropped; the matrix's users are the rest's users
    (row r of values is the r-th of them in index order), `available` its items (padding False).
    Values are clipped to `clip` first (so +inf becomes its upper end, as EasyRL4Rec clips KuaiRec's
    watch_ratio at 5), then NaN or infinite ones become the mean of the finite ones; a pair given
    twice gets the mean of its values. The matrix's available items that a user has no value for
    are `missing`: a constant (0: EasyRL4Rec's dense KuaiRec matrix), or "mf": the prediction of a
    biased matrix factorisation fit on the observed pairs (completing randomly exposed ratings),
    clipped to `clip`.
    """
    if "rating" not in events.columns:
        raise DataError(f"{where}: a reward matrix needs ratings (a value per user and item); the source has none")
    user_ids = pd.Index(pd.Series(data.user_ids).astype(str))
    item_ids = pd.Index(pd.Series(data.item_ids).astype(str))
    users = user_ids.get_indexer(events["user"].astype(str))
    items = item_ids.get_indexer(events["item"].astype(str)) + 1
    known = (users >= 0) & (items >= 1)
    if not known.any():
        raise DataError(f"{where}: none of its {len(events)} (user, item) pairs has a user and an item of the data")
    values = events["rating"].to_numpy(dtype="float64")[known]
    if clip is not None:
        values = np.clip(values, *clip)
    finite = np.isfinite(values)
    if not finite.any():
        raise DataError(f"{where}: no finite rating")
    values = np.where(finite, values, values[finite].mean())
    matrix_users, user_rows = np.unique(users[known], return_inverse=True)
    cells = torch.from_numpy(user_rows * (data.num_items + 1) + items[known])
    shape = (len(matrix_users), data.num_items + 1)
    counts = torch.bincount(cells, minlength=shape[0] * shape[1]).view(shape)
    sums = torch.bincount(cells, torch.from_numpy(values), minlength=shape[0] * shape[1]).view(shape)
    observed = counts > 0
    available = observed.any(0)
    matrix = torch.where(observed, sums / counts.clamp(min=1), 0.0).float()
    unseen = available & ~observed
    if missing == "mf":
        cell_rows, cell_items = observed.nonzero(as_tuple=True)
        model = fit_matrix_factorisation(
            cell_rows, cell_items, matrix[observed], shape[0], shape[1], dim=mf_dim, l2=mf_l2, seed=seed
        )
        for start in range(0, shape[0], ROW_CHUNK):
            block = slice(start, start + ROW_CHUNK)
            predicted = model.rows(torch.arange(start, min(start + ROW_CHUNK, shape[0])))
            if clip is not None:
                predicted = predicted.clamp(*clip)
            matrix[block] = torch.where(unseen[block], predicted, matrix[block])
    elif isinstance(missing, (int, float)) and not isinstance(missing, bool):
        matrix[unseen] = float(missing)
    else:
        raise ValueError(f"missing must be a number or 'mf', got {missing!r}")
    matrix[:, ~available] = 0.0
    rows = torch.full((data.num_users,), -1, dtype=torch.long)
    rows[torch.from_numpy(matrix_users)] = torch.arange(len(matrix_users))
    return matrix, rows, available
