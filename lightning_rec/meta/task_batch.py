"""Meta-learning tasks as batched tensors: cold-start users and user segments.

A task is a support set the policy adapts on and a query set it is judged on. Support data are
next-item windows (every non-zero target is predicted from the events before it; a user's first
event from an empty context, so even one known interaction gives the inner loop a signal). Query
data are evaluation rows (input, history to mask, target), as in the pretraining protocol. Every
task of a batch has the same tensor shapes, so the inner loop runs on all of them at once.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import Dataset

from lightning_rec.data.datasets import gather_windows
from lightning_rec.data.preprocess import SequenceData


@dataclasses.dataclass
class TaskBatch:
    """T tasks. `name` groups tasks for reporting (e.g. "cold_start/k5", "segment/held_out")."""

    support_input: torch.Tensor  # LongTensor[T, S, W], left-padded
    support_target: torch.Tensor  # LongTensor[T, S, W], next item at each position, 0 = none
    query_input: torch.Tensor  # LongTensor[T, Q, L], left-padded
    query_history: torch.Tensor  # LongTensor[T, Q, H], items to mask from the ranking
    query_target: torch.Tensor  # LongTensor[T, Q], 0 = no query row
    user: torch.Tensor  # LongTensor[T]: a cold-start task's user, -1 for segment tasks
    start: (
        torch.Tensor
    )  # LongTensor[T]: a cold-start task's user's position after its support events, 0 for segment tasks
    segment: torch.Tensor  # LongTensor[T]: a segment task's segment, -1 for cold-start tasks
    environment: torch.Tensor  # LongTensor[T]: the task's environment in an EnvironmentFamily, -1 for none
    name: str = "tasks"

    def __len__(self) -> int:
        return len(self.query_target)

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"]

    def apply(self, fn) -> TaskBatch:
        """The same tasks with `fn` applied to every tensor (e.g. row selection, clone)."""
        return TaskBatch(*(fn(t) for t in self.tensors()), self.name)


def _windows(
    data: SequenceData, starts: torch.Tensor, ends: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, target) windows [..., length] ending at flat positions `ends` (exclusive), never before `starts`."""
    window = gather_windows(data.items, starts.flatten(), ends.flatten(), length + 1).view(*ends.shape, length + 1)
    return window[..., :-1], window[..., 1:]


def cold_start_tasks(
    data: SequenceData,
    users: torch.Tensor,
    k: torch.Tensor,
    num_query: int,
    max_k: int,
    name: str = "cold_start",
    first: torch.Tensor | None = None,
    end: torch.Tensor | None = None,
) -> TaskBatch:
    """One task per user: its first k[t] events are the support set, the next `num_query` the query
    rows (each predicted from every event before it). Rows past the user's last event (or past
    position end[t], e.g. the end of its training events) are empty. With `first`, the user's
    history is taken to begin at event first[t] (a user seen mid-way, as if new: more tasks to
    meta-train on than every user's true start)."""
    if int(k.min()) < 1 or int(k.max()) > max_k:
        raise ValueError(f"cold-start k must be in 1..{max_k}, got {k.min().item()}..{k.max().item()}")
    first = torch.zeros_like(users) if first is None else first
    end = data.lengths[users] if end is None else end
    starts, lengths = data.offsets[users] + first, end - first
    support_input, support_target = _windows(data, starts, starts + torch.minimum(k, lengths), max_k)
    positions = k.unsqueeze(1) + torch.arange(num_query)  # [T, Q]
    present = positions < lengths.unsqueeze(1)
    ends = starts.unsqueeze(1) + positions.clamp(max=lengths.unsqueeze(1) - 1)
    query_len = max_k + num_query - 1
    query_input = gather_windows(data.items, starts.repeat_interleave(num_query), ends.flatten(), query_len).view(
        len(users), num_query, query_len
    )
    return TaskBatch(
        support_input.unsqueeze(1),
        support_target.unsqueeze(1),
        query_input,
        query_input,  # the window holds every earlier event of the user
        data.items[ends] * present,
        users,
        first + k,
        torch.full_like(users, -1),
        torch.full_like(users, -1),
        name,
    )


def segment_tasks(
    data: SequenceData,
    segments: torch.Tensor,
    support_users: torch.Tensor,
    support_ends: torch.Tensor,
    query_users: torch.Tensor,
    query_positions: torch.Tensor,
    window: int,
    name: str = "segment",
) -> TaskBatch:
    """Tasks from segments' logged behaviour: support windows [T, S] of `window` events ending
    (exclusive) at per-user positions `support_ends`, query rows [T, Q] at `query_positions` with the
    `window` events before as input and every earlier event as history. Query users -1 are padding."""
    present = query_users >= 0
    query_users = query_users.clamp(min=0)
    starts = data.offsets[support_users]
    support_input, support_target = _windows(data, starts, starts + support_ends, window)
    q_starts = data.offsets[query_users]
    q_ends = q_starts + query_positions
    query_input = gather_windows(data.items, q_starts.flatten(), q_ends.flatten(), window).view(
        *query_users.shape, window
    )
    history_len = max(int(query_positions.max()), 1)
    query_history = gather_windows(data.items, q_starts.flatten(), q_ends.flatten(), history_len).view(
        *query_users.shape, history_len
    )
    none = torch.full_like(segments, -1)
    return TaskBatch(
        support_input,
        support_target,
        query_input,
        query_history,
        data.items[q_ends] * present,
        none,
        torch.zeros_like(segments),
        segments,
        none,
        name,
    )


class ColdStartTaskDataset(Dataset):
    """Every (user, k) pair is one task; a DataLoader batch of indices becomes one TaskBatch. Only
    events before position end[u] of each user are used (default: all). With `anywhere`, each draw
    starts the task at a random event of the user (keeping a query event)."""

    def __init__(
        self,
        data: SequenceData,
        users: torch.Tensor,
        ks: list[int],
        num_query: int,
        max_k: int,
        name: str = "cold_start",
        anywhere: bool = False,
        end: torch.Tensor | None = None,
    ):
        self.end = data.lengths if end is None else end
        pairs = [(users[self.end[users] > k], k) for k in ks]  # a task needs at least one query event
        self.users = torch.cat([u for u, _ in pairs])
        self.k = torch.cat([torch.full((len(u),), k) for u, k in pairs])
        self.data, self.num_query, self.max_k, self.name, self.anywhere = data, num_query, max_k, name, anywhere

    def __len__(self) -> int:
        return len(self.users)

    def __getitems__(self, indices: list[int]) -> TaskBatch:
        idx = torch.as_tensor(indices)
        users, k = self.users[idx], self.k[idx]
        end = self.end[users]
        first = (torch.rand(len(idx)) * (end - k)).long() if self.anywhere else None
        return cold_start_tasks(self.data, users, k, self.num_query, self.max_k, self.name, first, end)


class Segments:
    """Users grouped by segment, for sampling members of a segment with tensor ops."""

    def __init__(self, assignment: torch.Tensor, users: torch.Tensor):
        """`assignment[u]` is the segment of user u; only `users` are members (others are held out)."""
        self.num_segments = int(assignment.max()) + 1
        self.members = users[assignment[users].argsort(stable=True)]
        self.counts = torch.bincount(assignment[users], minlength=self.num_segments)
        self.first = torch.cumsum(self.counts, 0) - self.counts

    def sample(self, segments: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`size` random members (with replacement) of each segment: [len(segments), size]."""
        if (self.counts[segments] == 0).any():
            raise ValueError("cannot sample users from an empty segment")
        offsets = (torch.rand(len(segments), size, generator=generator) * self.counts[segments].unsqueeze(1)).long()
        return self.members[self.first[segments].unsqueeze(1) + offsets]


class SegmentTaskDataset(Dataset):
    """Meta-training tasks from segments: each index draws a segment, `support_windows` windows of
    its users' training events and `num_query` of their training events as query rows."""

    def __init__(
        self,
        data: SequenceData,
        train_end: torch.Tensor,
        segments: Segments,
        segment_ids: torch.Tensor,
        num_tasks: int,
        support_windows: int,
        num_query: int,
        window: int,
    ):
        self.data, self.train_end, self.segments = data, train_end, segments
        self.segment_ids, self.num_tasks = segment_ids, num_tasks
        self.support_windows, self.num_query, self.window = support_windows, num_query, window

    def __len__(self) -> int:
        return self.num_tasks

    def __getitems__(self, indices: list[int]) -> TaskBatch:
        chosen = self.segment_ids[torch.randint(len(self.segment_ids), (len(indices),))]
        support_users = self.segments.sample(chosen, self.support_windows)
        query_users = self.segments.sample(chosen, self.num_query)
        # support windows end anywhere in the training prefix; query rows predict events 1.. of it
        support_ends = 1 + (torch.rand(support_users.shape) * self.train_end[support_users]).long()
        query_positions = 1 + (torch.rand(query_users.shape) * (self.train_end[query_users] - 1)).long()
        return segment_tasks(self.data, chosen, support_users, support_ends, query_users, query_positions, self.window)
