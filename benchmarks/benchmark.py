"""SASRec on the bundled ml-latest-small: lightning-rec against RecBole 1.2.1's SASRec, same split, same run.

    .venv/bin/python benchmarks/benchmark.py                      # ours only
    bash benchmarks/setup_recbole.sh && .venv/bin/python benchmarks/benchmark.py --recbole

Writes benchmarks/results/sasrec-ml-latest-small.json: test NDCG@10 / Recall@10, seconds to train, per epoch,
to evaluate every user against all items, the validation curve, and with --recbole the same for RecBole and
the ratios (quality, and time to reach RecBole's best validation NDCG@10). RecBole runs with our
recipe's settings where both have them (batch, learning rate, dropout, window, early-stopping patience,
threads; `recipe_settings`), or with its own (`--recbole-defaults`: batch 2,048, lr 0.001, dropout 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
RECBOLE_PYTHON = ROOT / "benchmarks/.recbole-venv/bin/python"


class ValidationCurve(L.Callback):
    """Wall-clock seconds since fit started (validation included, as RecBole's curve) at each validation,
    and the seconds of each training epoch alone."""

    def __init__(self):
        self.curve, self.epoch_seconds = [], []

    def on_fit_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_seconds.append(time.perf_counter() - self.epoch_start)

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.curve.append([time.perf_counter() - self.start, float(trainer.callback_metrics["val/ndcg@10"])])


def evaluate_all_users_seconds(model, datamodule, repeats: int = 3) -> float:
    """Best of `repeats` full passes: score every test user against all items, mask history, rank, metrics."""
    model.eval()
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            model.test_metrics.reset()
            start = time.perf_counter()
            for batch in datamodule.test_dataloader():
                model.test_metrics.update(model.score(batch["input"], batch["history"]), batch["target"])
            model.test_metrics.compute()
            best = min(best, time.perf_counter() - start)
    return best


def write_split_tsv(datamodule, path: Path) -> None:
    """Our preprocessed sequences for RecBole: user index, item id, position in the user's sequence."""
    data = datamodule.data
    user = torch.repeat_interleave(torch.arange(data.num_users), data.lengths)
    position = torch.arange(len(data.items)) - data.offsets[user]
    pd.DataFrame({"user": user + 1, "item": data.items, "timestamp": position}).to_csv(path, sep="\t", index=False)


def run_ours(config: str, workdir: Path, extra: list[str]) -> tuple[dict, object, dict]:
    from lightning_rec.cli import RecommenderCLI

    cli = RecommenderCLI(
        args=[
            "-c",
            config,
            "-c",
            str(ROOT / "configs/logger/csv.yaml"),
            "--trainer.default_root_dir",
            str(workdir),
            "--trainer.logger.init_args.save_dir",
            str(workdir),
            "--trainer.enable_progress_bar",
            "false",
            *extra,
        ],
        run=False,
    )
    curve = ValidationCurve()
    cli.trainer.callbacks.append(curve)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    train_seconds = time.perf_counter() - start
    (test,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    result = {
        "test": {"ndcg@10": test["test/ndcg@10"], "recall@10": test["test/recall@10"]},
        "best_valid_ndcg@10": max(v for _, v in curve.curve),
        "train_seconds": train_seconds,
        "seconds_per_epoch": sum(curve.epoch_seconds) / len(curve.epoch_seconds),
        "evaluate_all_users_seconds": evaluate_all_users_seconds(cli.model, cli.datamodule),
        "evaluated_users": len(cli.datamodule.split.test_users),
        "num_items": cli.datamodule.num_items,
        "valid_curve": curve.curve,
        "epochs": len(curve.epoch_seconds),
    }
    return result, cli.datamodule, recipe_settings(cli)


def recipe_settings(cli) -> dict:
    """Our recipe's settings that RecBole's SASRec also has, as recbole_sasrec.py options: the same
    batch, learning rate, dropout, window and patience, and the same threads (its L2 weight decay is
    not AdamW's decoupled one, so it stays at RecBole's 0; it has no warm-up)."""
    stopping = [c for c in cli.trainer.callbacks if type(c).__name__ == "EarlyStopping"]
    data, model = cli.config["data"]["init_args"], cli.config["model"]["init_args"]
    return {
        "--train-batch-size": data["batch_size"],
        "--learning-rate": model["lr"],
        "--dropout": model["sequence_encoder"]["init_args"]["dropout"],
        "--max-seq-len": data["max_len"],
        "--threads": torch.get_num_threads(),
        **({"--stopping-step": stopping[0].patience} if stopping else {}),
    }


def run_recbole(tsv: Path, out: Path, epochs: int, max_seconds: float | None, settings: dict) -> dict:
    command = [
        str(RECBOLE_PYTHON),
        str(ROOT / "benchmarks/recbole_sasrec.py"),
        "--inter",
        str(tsv),
        "--out",
        str(out),
        "--protocol",
        "masked",
        "--epochs",
        str(epochs),
        "--quiet",
    ]
    if max_seconds:
        command += ["--max-train-seconds", str(max_seconds)]
    command += [str(word) for option in settings.items() for word in option]
    subprocess.run(command, check=True, env={**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    return json.loads(out.read_text())


def first_time_reaching(curve: list, target: float) -> float | None:
    return next((seconds for seconds, value in curve if value >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs/sasrec-ml-latest-small.yaml"))
    parser.add_argument(
        "--recbole", action="store_true", help="also run RecBole's SASRec (needs benchmarks/setup_recbole.sh)"
    )
    parser.add_argument("--recbole-epochs", type=int, default=200)
    parser.add_argument(
        "--recbole-defaults", action="store_true", help="RecBole's own settings, not our recipe's (batch 2,048, ...)"
    )
    parser.add_argument("--recbole-max-seconds", type=float, default=None, help="stop RecBole after this much training")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/sasrec-ml-latest-small.json"))
    args, extra = parser.parse_known_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ours, datamodule, settings = run_ours(args.config, workdir, extra)
        report = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "threads": torch.get_num_threads(),
            "ours": ours,
        }
        if args.recbole:
            if not RECBOLE_PYTHON.exists():
                sys.exit(f"{RECBOLE_PYTHON} not found: run `bash benchmarks/setup_recbole.sh` first")
            tsv = workdir / "split.tsv"
            write_split_tsv(datamodule, tsv)
            settings = {} if args.recbole_defaults else settings
            recbole_out = workdir / "recbole.json"
            recbole = run_recbole(tsv, recbole_out, args.recbole_epochs, args.recbole_max_seconds, settings)
            report["recbole_settings"] = settings or "RecBole's defaults"
            target = recbole["best_valid_ndcg@10"]
            ours_time = first_time_reaching(ours["valid_curve"], target)
            recbole_time = first_time_reaching(recbole["valid_curve"], target)
            report["recbole"] = {
                k: recbole[k]
                for k in (
                    "test",
                    "best_valid_ndcg@10",
                    "best_epoch",
                    "train_seconds",
                    "epochs_run",
                    "stopped_by",
                    "valid_curve",
                    "data",
                )
            }
            report["ratios"] = {
                "test_ndcg@10": ours["test"]["ndcg@10"] / recbole["test"]["ndcg@10"],
                "test_recall@10": ours["test"]["recall@10"] / recbole["test"]["recall@10"],
                "seconds_to_recbole_best_valid_ndcg@10": {
                    "ours": ours_time,
                    "recbole": recbole_time,
                    "ours/recbole": ours_time / recbole_time if ours_time else None,
                },
            }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    summary = {k: report[k] for k in ("ratios",) if k in report}
    print(
        json.dumps(
            {
                "ours": {
                    k: ours[k] for k in ("test", "train_seconds", "seconds_per_epoch", "evaluate_all_users_seconds")
                },
                **summary,
            },
            indent=2,
        )
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
