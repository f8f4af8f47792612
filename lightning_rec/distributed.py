"""Work split over DDP processes that gives what one process gives: `gather_rows` brings every
process's rows back in rank order (shards of unequal sizes, which torch's all_gather cannot take), and
`keyed_uniform` draws random numbers that are a function of their keys (a user, an item), the same
whichever process or batch a row lands in."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def world() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Shards(DistributedSampler):
    """Evaluation rows split over the processes, each exactly once (rank r gets r, r + W, ...):
    no padding repeats, and a process may get none (Lightning's UnrepeatedDistributedSampler refuses
    datasets smaller than the number of processes)."""

    def __init__(self, dataset):
        super().__init__(dataset, shuffle=False)
        self.total_size = len(dataset)
        self.num_samples = len(range(self.rank, self.total_size, self.num_replicas))

    def __iter__(self):
        return iter(range(self.rank, self.total_size, self.num_replicas))


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every process's `rows` [n_rank, ...] concatenated in rank order (`rows` itself on one process).
    Each process must call it, with the same trailing shape and dtype."""
    _, size = world()
    if size == 1:
        return rows
    carried = rows.to(torch.uint8) if rows.dtype == torch.bool else rows  # gloo has no bool all_gather
    counts = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([len(rows)], device=rows.device))
    counts = [int(c) for c in counts]
    padded = carried.new_zeros((max(counts), *rows.shape[1:]))
    padded[: len(rows)] = carried
    shards = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(shards, padded)
    return torch.cat([shard[:count] for shard, count in zip(shards, counts)]).to(rows.dtype)


def most(count: int) -> int:
    """The largest of every process's `count` (so each process runs as many steps of a loop)."""
    if world()[1] == 1:
        return count
    value = torch.tensor(count)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value)


def average_gradients(parameters) -> None:
    """Each parameter's .grad replaced by its mean over the processes (what DDP's backward does, for
    stages that backpropagate outside it). A parameter without a gradient counts as zero, so every
    process reduces the same set; an optimiser with momentum then still moves it, where one process
    would have skipped it."""
    if world()[1] == 1:
        return
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
        parameter.grad /= world()[1]


_MIX = (-4658895280553007687, -7723592293110705685)  # splitmix64's multipliers as signed int64


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def inverse_cdf(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Draws from each row of non-negative `weights` [R, C] given uniform [0, 1) floats [R, U]: the
    column index [R, U] where uniform * row total falls in the row's CDF. With `keyed_uniform`, a
    multinomial draw that depends on its keys alone."""
    cdf = weights.cumsum(1)
    picks = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True)
    return picks.clamp(max=weights.shape[1] - 1)


def keyed_uniform(seed: int, *keys: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) floats, one per element of the broadcast integer `keys`, from the splitmix64
    hash of (seed, keys): reproducible element by element, unlike a generator's stream."""
    z = torch.full((), seed & (2**40 - 1), dtype=torch.long)
    for key in keys:
        z = z * 2_000_003 + key.long()  # distinct for keys below 2M; wraps around 2**64 beyond, as hashes may
    z = z ^ _shift_right(z, 30)
    z = z * _MIX[0]
    z = z ^ _shift_right(z, 27)
    z = z * _MIX[1]
    z = z ^ _shift_right(z, 31)
    return (_shift_right(z, 11).double() / 2.0**53).float()
