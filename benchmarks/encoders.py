"""Item encoders (ID / text / hybrid) and sequence encoders (SASRec / BERT4Rec / GRU4Rec) on the bundled
ml-latest-small, warm and cold-start, with popularity and random baselines, in one JSON + markdown table.

Every model is trained through the recipes themselves (configs/data/ml-latest-small.yaml + a
configs/model/*.yaml + configs/trainer/cpu.yaml, via the LightningCLI), with the same budget, and
tested from its best validation checkpoint. "cold" withholds a seeded 20% of items from training
(`cold_item_fraction`); `test_cold/` is measured on the test rows whose target is such an item.
The text encoders need the encode stage's cache (run first, or pass --encode):

    .venv/bin/lightning-rec predict -c configs/data/ml-latest-small.yaml -c configs/encode-ml-latest-small.yaml
    nice -n 5 .venv/bin/python benchmarks/encoders.py --epochs 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L

from lightning_rec.cli import RecommenderCLI

ROOT = Path(__file__).resolve().parents[1]
DATA = "configs/data/ml-latest-small.yaml"
MODELS = {  # name: (model YAML, item encoder, sequence encoder)
    "sasrec-id": ("configs/model/sasrec.yaml", "id", "SASRec"),
    "sasrec-text": ("configs/model/text-sasrec.yaml", "text", "SASRec"),
    "sasrec-hybrid": ("configs/model/hybrid-sasrec.yaml", "hybrid", "SASRec"),
    "bert4rec-id": ("configs/model/bert4rec.yaml", "id", "BERT4Rec"),
    "gru4rec-id": ("configs/model/gru4rec.yaml", "id", "GRU4Rec"),
}
BASELINES = {
    "popularity": "lightning_rec.stages.baselines.PopularityRecommender",
    "random": "lightning_rec.stages.baselines.RandomRecommender",
}
KEYS = ["test/ndcg@10", "test/recall@10", "test_cold/ndcg@10", "test_cold/recall@10"]


def common_args(root: Path, cold: float, args) -> list[str]:
    return [
        f"--seed_everything={args.seed}",
        f"--data.init_args.max_len={args.max_len}",
        f"--data.init_args.batch_size={args.batch_size}",
        f"--data.init_args.cold_item_fraction={cold}",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def run_model(name: str, cold: float, args) -> dict:
    config, item, sequence = MODELS[name]
    root = ROOT / args.workdir / f"{name}-cold{cold}"
    cli = RecommenderCLI(
        args=[
            "-c",
            DATA,
            "-c",
            config,
            "-c",
            "configs/trainer/cpu.yaml",
            *common_args(root, cold, args),
            f"--trainer.max_epochs={args.epochs}",
        ],
        run=False,
    )
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    (result,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    return {
        "model": name,
        "item_encoder": item,
        "sequence_encoder": sequence,
        "train_seconds": round(seconds, 1),
        **pick(result),
    }


def run_baseline(name: str, cold: float, args) -> dict:
    root = ROOT / args.workdir / f"{name}-cold{cold}"
    cli = RecommenderCLI(args=["-c", DATA, f"--model={BASELINES[name]}", *common_args(root, cold, args)], run=False)
    (result,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return {"model": name, "item_encoder": "-", "sequence_encoder": "-", "train_seconds": 0.0, **pick(result)}


def pick(result: dict) -> dict:
    return {key: round(float(result[key]), 4) if key in result else None for key in KEYS}


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"ml-latest-small, leave-one-out, full ranking; {args.epochs} epochs of windows (max_len {args.max_len}, "
        f"batch {args.batch_size}), best validation NDCG@10 checkpoint; seed {args.seed}.",
        "",
        "| setting | model | item enc. | seq. enc. | NDCG@10 | Recall@10 | cold NDCG@10 | cold Recall@10 | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        values = [r[k] if r[k] is not None else "-" for k in KEYS]
        lines.append(
            f"| {r['setting']} | {r['model']} | {r['item_encoder']} | {r['sequence_encoder']} | "
            + " | ".join(f"{v:.4f}" if isinstance(v, float) else v for v in values)
            + f" | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--settings", nargs="+", default=["warm", "cold"], choices=["warm", "cold"])
    parser.add_argument("--cold-fraction", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encode", action="store_true", help="run the encode stage first (reuses an up-to-date cache)")
    parser.add_argument("--workdir", default="outputs/benchmarks/encoders")
    parser.add_argument("--output", default="benchmarks/results/encoders-ml-latest-small")
    args = parser.parse_args()

    if args.encode:
        RecommenderCLI(args=["predict", "-c", DATA, "-c", "configs/encode-ml-latest-small.yaml"])
    output = ROOT / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for setting in args.settings:
        cold = args.cold_fraction if setting == "cold" else 0.0
        for name in BASELINES:
            L.seed_everything(args.seed)
            rows.append({"setting": setting, "cold_item_fraction": cold, **run_baseline(name, cold, args)})
        for name in args.models:
            rows.append({"setting": setting, "cold_item_fraction": cold, **run_model(name, cold, args)})
            print(json.dumps(rows[-1]), flush=True)
            # written after every model, so a long run that is stopped keeps what it measured
            output.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
            output.with_suffix(".md").write_text(markdown(rows, args))
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
