"""The evaluation table and reward-curve figure of the RL stage, as files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from lightning_rec.rl.rollout import Episodes


def online_metrics(episodes: Episodes, num_items: int) -> dict[str, float]:
    """Average return, CTR (share of slates with a click), episode length and catalogue coverage
    (share of items 1..N shown at least once) of a set of episodes."""
    steps = episodes.valid.sum()
    shown = torch.zeros(num_items + 1, dtype=torch.bool)
    shown[episodes.slates[episodes.valid].flatten().cpu()] = True
    return {
        "return": float(episodes.rewards.sum(1).mean()),
        "ctr": float(episodes.clicks.any(-1)[episodes.valid].float().sum() / steps),
        "length": float(steps / len(episodes.valid)),
        "coverage": float(shown[1:].float().mean()),
    }


def paired_ratio(values: torch.Tensor, base: torch.Tensor) -> tuple[float, float]:
    """mean(values) / mean(base), and its standard error from the paired differences (values and
    base measured on the same users, with the same random clicks), relative to the base mean."""
    differences = (values - base).double()
    se = differences.std() / len(differences) ** 0.5 if len(differences) > 1 else torch.tensor(0.0)
    return float(values.mean() / base.mean()), float(se / base.double().mean())


def reward_curve(episodes: Episodes, max_steps: int) -> tuple[list[float], list[float]]:
    """Mean reward at each step (0 for users who left) and the share of users still there."""
    rewards = torch.zeros(len(episodes.rewards), max_steps)
    valid = torch.zeros(len(episodes.rewards), max_steps)
    steps = episodes.rewards.shape[1]
    rewards[:, :steps], valid[:, :steps] = episodes.rewards.cpu(), episodes.valid.float().cpu()
    return rewards.mean(0).tolist(), valid.mean(0).tolist()


def write_report(
    table: pd.DataFrame, curves: dict[str, tuple[list[float], list[float]]], directory: str
) -> dict[str, Path]:
    """table.csv, table.md and reward_curves.png under `directory`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "table.csv", "markdown": out / "table.md", "png": out / "reward_curves.png"}
    table.to_csv(paths["csv"], index=False)
    paths["markdown"].write_text(to_markdown(table) + "\n")
    figure, (reward_axis, stay_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for name, (rewards, present) in curves.items():
        steps = range(1, len(rewards) + 1)
        reward_axis.plot(steps, rewards, marker="o", label=name)
        stay_axis.plot(steps, present, marker="o", label=name)
    reward_axis.set(xlabel="step", ylabel="mean reward (0 once left)", title="reward per step, evaluation environment")
    stay_axis.set(xlabel="step", ylabel="share of users still in session", title="session survival")
    reward_axis.legend()
    figure.tight_layout()
    figure.savefig(paths["png"], dpi=120)
    plt.close(figure)
    return paths


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub table with numbers to 4 significant digits (no tabulate dependency)."""
    cells = [
        [f"{value:.4g}" if isinstance(value, float) else str(value) for value in row]
        for row in table.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
