"""Turning a trained recommender into recommendations: a predict-time file writer and the
`lightning-rec recommend` command that prints one user's history and top-k titles."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_rec.atomic import atomic_path
from lightning_rec.checkpoints import read_checkpoint


def recommendations_frame(datamodule, users: torch.Tensor, items: torch.Tensor, scores: torch.Tensor) -> pd.DataFrame:
    """Long format: one row per (user, rank) with original ids and titles."""
    k = items.shape[1]
    info = datamodule.data.item_info
    item_ids = pd.Series(datamodule.data.item_ids)
    flat_items = items.reshape(-1).numpy() - 1
    return pd.DataFrame(
        {
            "user": pd.Series(datamodule.data.user_ids).iloc[users.repeat_interleave(k).numpy()].to_numpy(),
            "rank": torch.arange(1, k + 1).repeat(len(users)).numpy(),
            "item": item_ids.iloc[flat_items].to_numpy(),
            "title": info["title"].iloc[flat_items].to_numpy(),
            "score": scores.reshape(-1).float().numpy(),
        }
    )


class RecommendationWriter(BasePredictionWriter):
    """Writes top-k recommendations of `lightning-rec predict` to CSV or Parquet (by suffix).

    Under DDP each process writes `<stem>.rank<N><suffix>`; one process writes `path` itself. The file
    is written to a temporary name and renamed (lightning_rec/atomic.py), so an interrupted run never
    leaves a truncated file.
    """

    def __init__(self, path: str = "outputs/recommendations.csv"):
        super().__init__(write_interval="epoch")
        self.path = Path(path)
        if self.path.suffix not in {".csv", ".parquet"}:
            raise ValueError(f"RecommendationWriter path must end in .csv or .parquet, got {path!r}")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        frame = recommendations_frame(
            trainer.datamodule,
            torch.cat([b["user"] for b in batches]),
            torch.cat([b["items"] for b in batches]),
            torch.cat([b["scores"] for b in batches]),
        )
        path = (
            self.path
            if trainer.world_size == 1
            else self.path.with_name(f"{self.path.stem}.rank{trainer.global_rank}{self.path.suffix}")
        )
        with atomic_path(path) as tmp:
            if path.suffix == ".csv":
                frame.to_csv(tmp, index=False)
            else:
                frame.to_parquet(tmp, index=False)


def load_trained(ckpt_path: str, config_args: list[str]):
    """(data, model) of the training YAML `config_args` (`-c CONFIG ...`, as `fit` was given) with the
    checkpoint's weights, in eval mode: what `recommend` and `serve` answer from."""
    from lightning_rec.cli import RecommenderCLI

    cli = RecommenderCLI(args=config_args, run=False)
    data, model = cli.datamodule, cli.model
    data.setup("predict")
    model.build(data.catalog)
    state = read_checkpoint(ckpt_path)
    state["state_dict"] = model.grown_state(state, ckpt_path)  # items added after training
    model.load_state_dict(state["state_dict"])
    return data, model.eval()


def recommend_main(argv: list[str]) -> None:
    """`lightning-rec recommend -c CONFIG... --ckpt_path CKPT --user ID [--k 10]`: builds the data and model
    from the same YAML as training, loads the checkpoint and prints the user's history and top-k."""
    parser = argparse.ArgumentParser(prog="lightning-rec recommend", description=recommend_main.__doc__)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--user", required=True, help="original user id as in the data")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--history", type=int, default=10, help="how many recent history items to show")
    known, rest = parser.parse_known_args(argv)
    data, model = load_trained(known.ckpt_path, rest)
    user = data.user_index(known.user)
    titles = data.data.item_info["title"]
    if user is None:
        print(f"user {known.user!r} is not in the data: showing the {known.k} most popular items instead")
        history = torch.zeros(1, 1, dtype=torch.long)
    else:
        history = data.data.user_history(user).unsqueeze(0)
        print(f"user {known.user}: {history.shape[1]} interactions; most recent:")
        for item in history[0, -known.history :].tolist():
            print(f"   {titles.iloc[item - 1]}")
    with torch.no_grad():
        _, items = model.score(history[:, -data.hparams.max_len :], history).topk(known.k, dim=1)
    print(f"top {known.k} recommendations:")
    for rank, item in enumerate(items[0].tolist(), 1):
        print(f"{rank:4d}. {titles.iloc[item - 1]}")
