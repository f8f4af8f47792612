"""Run agents in a UserSimulator: batched episodes, recorded for evaluation and policy updates."""

from __future__ import annotations

import dataclasses

import torch

from lightning_rec.data.errors import DataError
from lightning_rec.distributed import gather_rows, world
from lightning_rec.resume import derived_seed
from lightning_rec.rl.agents import SlateAgent
from lightning_rec.rl.simulator import UserSimulator
from lightning_rec.rl.slates import sample_slates


@dataclasses.dataclass
class Episodes:
    """One episode per user; T = the number of steps until every user was done."""

    slates: torch.Tensor  # LongTensor[B, T, K]
    clicks: torch.Tensor  # BoolTensor[B, T, K]
    rewards: torch.Tensor  # FloatTensor[B, T], 0 after the episode's end
    valid: torch.Tensor  # BoolTensor[B, T]: the step happened (a prefix of each row)
    consumed: torch.Tensor  # BoolTensor[B, N + 1]: what the rollout masked when the episode began (padding,
    # items the environment cannot show, and what each user had consumed unless repeats were allowed)
    log_probs: torch.Tensor | None = (
        None  # FloatTensor[B, T, K]: each slate item's log-probability in the sampling softmax
    )
    sequence: torch.Tensor | None = None  # LongTensor[B, S]: a RecommenderAgent's final slot row
    slots: torch.Tensor | None = None  # LongTensor[B, T]: its state slot at each step
    states: torch.Tensor | None = None  # FloatTensor[B, T, D]: its state at each step
    masks_repeats: bool = True  # consumed and already shown items were masked (every mode but FreeB)
    histories: torch.Tensor | None = None  # LongTensor[B, T, H]: a HistoryAgent's observation at each step

    @property
    def clicked(self) -> torch.Tensor:
        """LongTensor[B, T]: the clicked item at each step, 0 for none."""
        return (self.slates * self.clicks).sum(-1)

    @property
    def clicked_log_probs(self) -> torch.Tensor:
        """FloatTensor[B, T]: the sampling log-probability of the clicked item, 0 for no click."""
        return (self.log_probs * self.clicks).sum(-1)

    def rows(self, index: torch.Tensor) -> Episodes:
        """The episodes of rows `index` [b], in that order."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Episodes(**{name: v[index] if isinstance(v, torch.Tensor) else v for name, v in fields.items()})

    @classmethod
    def cat(cls, parts: list[Episodes]) -> Episodes:
        """Episodes of several rollouts (under the same repeat masking) as one, rows one part after
        another, steps padded to the longest part's (a padded step did not happen and earns nothing)."""
        if len({part.masks_repeats for part in parts}) > 1:
            raise ValueError("cannot join episodes that masked repeats with episodes that allowed them")
        steps = max(part.rewards.shape[1] for part in parts)
        fields = {"masks_repeats": parts[0].masks_repeats}
        for name in (f.name for f in dataclasses.fields(cls) if f.name != "masks_repeats"):
            values = [getattr(part, name) for part in parts]
            if values[0] is None:
                fields[name] = None
            elif name in ("consumed", "sequence"):  # no step dimension
                fields[name] = torch.cat(values)
            else:
                fields[name] = torch.cat(
                    [torch.cat([v, v.new_zeros(len(v), steps - v.shape[1], *v.shape[2:])], 1) for v in values]
                )
        return cls(**fields)

    def blocked(self, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """BoolTensor[b, T, N + 1]: the items masked at each step (consumed before the episode or
        shown at an earlier step), exactly as `rollout` masked them."""
        slates = self.slates[rows]
        b, steps, k = slates.shape
        if not self.masks_repeats:
            return self.consumed[rows].unsqueeze(1).repeat(1, steps, 1)
        earlier = torch.ones(steps, steps, dtype=torch.bool, device=slates.device).tril(-1)  # [t, u]: u < t
        shown = slates.unsqueeze(1).expand(b, steps, steps, k) * earlier[None, :, :, None]
        blocked = self.consumed[rows].unsqueeze(1).repeat(1, steps, 1)
        return blocked.scatter_(2, shown.reshape(b, steps, steps * k), True)


def check_slate_size(slate_size: int, num_items: int) -> None:
    """A slate holds 1 to `num_items` items: an empty one has nothing to click, and a top-K larger
    than the catalogue fails inside topk."""
    if slate_size < 1:
        raise DataError(f"slate_size must be at least 1, got {slate_size}")
    if slate_size > num_items:
        raise DataError(f"slate_size={slate_size} exceeds the catalogue's {num_items} items")


@torch.no_grad()
def rollout(
    env: UserSimulator,
    agent: SlateAgent,
    users: torch.Tensor,
    positions: torch.Tensor | None = None,
    slate_size: int = 10,
    sample: bool = False,
    generator: torch.Generator | None = None,
    dice: torch.Tensor | None = None,
) -> Episodes:
    """Play one episode per user: the agent's scores, masked for padding, items the environment
    cannot show (`env.available`) and consumed and already shown items (not in the FreeB mode, where
    repeats are allowed), give a slate by the agent's `select` (top-K) or, with `sample`, by drawing
    K items without replacement. `dice`: per-episode keys of the environment's clicks (`UserSimulator.reset`)."""
    state = env.reset(users, positions, dice)
    check_slate_size(slate_size, state.consumed.shape[1] - 1)
    agent.start(state)
    masks_repeats = env.behaviour.masks_repeats  # FreeB: only padding (and unavailable items) masked
    blocked = state.consumed.clone() if masks_repeats else torch.zeros_like(state.consumed)
    blocked |= ~env.available  # padding, and items the environment cannot show
    consumed = blocked.clone()
    steps = {"slates": [], "clicks": [], "rewards": [], "valid": [], "log_probs": []}
    while not state.done.all():
        logits = agent.scores().to(blocked.device).masked_fill(blocked, float("-inf"))
        if sample:
            slates, log_probs = sample_slates(logits, slate_size, generator)
            steps["log_probs"].append(log_probs)
        else:
            slates = agent.select(logits, slate_size)
        valid = ~state.done
        clicks, rewards, _ = env.step(slates)
        agent.observe((slates * clicks).sum(1))
        if masks_repeats:
            blocked.scatter_(1, slates, True)
        for key, value in (("slates", slates), ("clicks", clicks), ("rewards", rewards * valid), ("valid", valid)):
            steps[key].append(value)
    recorded = {key: torch.stack(value, 1) for key, value in steps.items() if value}
    return Episodes(consumed=consumed, masks_repeats=masks_repeats, **recorded, **agent.recorded())


def play_in_chunks(
    env: UserSimulator, agent: SlateAgent, users: torch.Tensor, slate_size: int, seed: int, chunk: int = 1024
) -> Episodes:
    """Greedy episodes of `users` in chunks of `chunk` users, chunk c on simulator and agent dice
    seeded from (seed, c); under DDP the chunks are split over the processes and gathered back in
    order. So evaluation tables are the same on one process or several, and every policy meets the
    same users with the same dice. Only slates, clicks, rewards and valid are kept, padded to the
    behaviour's max_steps (`consumed` is left empty)."""
    rank, size = world()
    chunks = users.split(chunk)
    parts = []
    for index in torch.arange(len(chunks)).tensor_split(size)[rank].tolist():
        env.seed(derived_seed(seed, index))
        agent.reseed(derived_seed(seed, index))
        parts.append(padded_steps(rollout(env, agent, chunks[index], slate_size=slate_size), env.behaviour.max_steps))
    steps, device = env.behaviour.max_steps, env.device
    empty = {
        "slates": torch.zeros(0, steps, slate_size, dtype=torch.long, device=device),
        "clicks": torch.zeros(0, steps, slate_size, dtype=torch.bool, device=device),
        "rewards": torch.zeros(0, steps, device=device),
        "valid": torch.zeros(0, steps, dtype=torch.bool, device=device),
    }
    fields = {key: gather_rows(torch.cat([empty[key], *(part[key] for part in parts)])) for key in empty}
    consumed = torch.zeros(len(users), 0, dtype=torch.bool, device=device)
    return Episodes(**fields, consumed=consumed, masks_repeats=env.behaviour.masks_repeats)


def padded_steps(episodes: Episodes, steps: int) -> dict[str, torch.Tensor]:
    """The episodes' slates, clicks, rewards and valid with T padded to `steps` (no step, no reward)."""
    pad = steps - episodes.rewards.shape[1]
    return {
        "slates": torch.nn.functional.pad(episodes.slates, (0, 0, 0, pad)),
        "clicks": torch.nn.functional.pad(episodes.clicks, (0, 0, 0, pad)),
        "rewards": torch.nn.functional.pad(episodes.rewards, (0, pad)),
        "valid": torch.nn.functional.pad(episodes.valid, (0, pad)),
    }
