"""The evaluation table and reward-curve figure of the RL stage, as files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from lightning_rec.atomic import atomic_path
from lightning_rec.rl.rollout import Episodes


def online_metrics(episodes: Episodes, num_items: int) -> dict[str, float]:
    """A set of episodes in the field's units (EasyRL4Rec): R_tra, the mean return of an episode;
    len_tra, its mean length in turns (slates shown); reward_per_turn, all reward over all turns
    (R_tra / len_tra); CTR, the share of turns with a click; coverage, the share of items 1..N
    shown at least once."""
    turns = episodes.valid.sum()
    returns = episodes.rewards.sum(1)
    shown = torch.zeros(num_items + 1, dtype=torch.bool)
    shown[episodes.slates[episodes.valid].flatten().cpu()] = True
    return {
        "R_tra": float(returns.mean()),
        "len_tra": float(turns / len(episodes.valid)),
        "reward_per_turn": float(returns.sum() / turns),
        "ctr": float(episodes.clicks.any(-1)[episodes.valid].float().sum() / turns),
        "coverage": float(shown[1:].float().mean()),
    }


def paired_ratio(values: torch.Tensor, base: torch.Tensor) -> tuple[float, float]:
    """mean(values) / mean(base), and its standard error from the paired differences (values and
    base measured on the same users, with the same random clicks), relative to the base mean."""
    differences = (values - base).double()
    se = differences.std() / len(differences) ** 0.5 if len(differences) > 1 else torch.tensor(0.0)
    return float(values.mean() / base.mean()), float(se / base.double().mean())


def reward_curve(episodes: Episodes, max_steps: int) -> tuple[list[float], list[float]]:
    """By turn 1..max_steps: the mean reward over all sessions (0 once a session is over, so the
    curve sums to R_tra), and survival, the share of sessions still going at that turn."""
    rewards = torch.zeros(len(episodes.rewards), max_steps)
    valid = torch.zeros(len(episodes.rewards), max_steps)
    steps = episodes.rewards.shape[1]
    rewards[:, :steps], valid[:, :steps] = episodes.rewards.cpu(), episodes.valid.float().cpu()
    return rewards.mean(0).tolist(), valid.mean(0).tolist()


def write_report(
    table: pd.DataFrame, curves: dict[str, dict[str, tuple[list[float], list[float]]]], directory: str
) -> dict[str, Path]:
    """table.csv, table.md and reward_curves.png under `directory`; returns their paths. `curves`
    maps each block (a session mode) to each policy's `reward_curve`: one row of the figure per block,
    reward by turn on the left, survival on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "table.csv", "markdown": out / "table.md", "png": out / "reward_curves.png"}
    write_table(table, paths["csv"], paths["markdown"])
    figure, axes = plt.subplots(len(curves), 2, figsize=(11, 4 * len(curves)), squeeze=False)
    for (block, policies), (reward_axis, stay_axis) in zip(curves.items(), axes):
        for name, (rewards, present) in policies.items():
            turns = range(1, len(rewards) + 1)
            reward_axis.plot(turns, rewards, marker="o", label=name)
            stay_axis.plot(turns, present, marker="o", label=name)
        reward_axis.set(xlabel="turn", ylabel="mean reward (0 once over)", title=f"{block}: reward by turn")
        stay_axis.set(xlabel="turn", ylabel="share of sessions still going", title=f"{block}: survival")
        reward_axis.legend(fontsize="small")
    figure.tight_layout()
    with atomic_path(paths["png"]) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    return paths


def write_table(table: pd.DataFrame, csv: Path, markdown: Path) -> None:
    """The table as CSV and as Markdown, each file replaced atomically."""
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(markdown) as tmp:
        tmp.write_text(to_markdown(table) + "\n")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub table with numbers to 4 significant digits and missing values as '-' (no tabulate dependency)."""
    cells = [[cell(value) for value in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def cell(value) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.4g}"
    return str(value)
