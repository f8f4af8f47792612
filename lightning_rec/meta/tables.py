"""Meta-test and online-replay reports: a table, a PNG of curves, and the same to W&B if in use."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lightning_rec.atomic import atomic_path
from lightning_rec.rl.tables import write_table


def adaptation_table(curves: pd.DataFrame, steps: int) -> pd.DataFrame:
    """One row per task set and metric: the value before adaptation and after `steps` inner steps,
    from the plain pretrained start and from the meta-learned start, their ratio, and the adapted
    meta - plain difference with its standard error (paired: both starts score the same rows).
    `curves` has columns tasks, start ("plain" | "meta" | "meta-plain"), step, metric, value, se,
    count."""
    rows = []
    for (tasks, metric), group in curves.groupby(["tasks", "metric"], sort=False):
        point = group.set_index(["start", "step"])
        value = point["value"]
        rows.append(
            (
                tasks,
                metric,
                int(point["count"]["meta", steps]),
                value["plain", 0],
                value["meta", 0],
                value["plain", steps],
                value["meta", steps],
                value["meta-plain", steps],
                point["se"]["meta-plain", steps],
            )
        )
    columns = [
        "tasks",
        "metric",
        "rows",
        "plain_before",
        "meta_before",
        "plain_adapted",
        "meta_adapted",
        "adapted_gain",
        "adapted_gain_se",
    ]
    table = pd.DataFrame(rows, columns=columns)
    table.insert(7, "meta_vs_plain_adapted", table.meta_adapted / table.plain_adapted)
    return table


def plot_curves(
    frame: pd.DataFrame, x: str, y: str, panel: str, line: str, path: Path, xlabel: str, title: str
) -> None:
    """One panel per value of `panel`, one line per value of `line`, `y` against `x`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(frame[panel]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False, sharey=False)
    for ax, name in zip(axes[0], panels):
        for label, group in frame[frame[panel] == name].groupby(line, sort=False):
            ax.plot(group[x], group[y], marker="o", markersize=3, label=str(label))
        ax.set_title(str(name), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(y)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)


def publish(logger, directory: Path, tables: dict[str, pd.DataFrame], images: dict[str, Path]) -> None:
    """Write tables as CSV and Markdown under `directory`; send tables and images to W&B when the
    run logs there."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        write_table(table, directory / f"{name}.csv", directory / f"{name}.md")
    if type(logger).__name__ == "WandbLogger":
        for name, table in tables.items():
            logger.log_table(key=f"meta/{name}", dataframe=table)
        for name, path in images.items():
            logger.log_image(key=f"meta/{name}", images=[str(path)])
