"""Item encoders (ID / text / hybrid) and sequence encoders (SASRec / BERT4Rec / GRU4Rec) on the bundled
ml-latest-small, warm and with cold-start items withheld, with popularity and random baselines, in one
JSON + markdown table, and paired standard errors between models on the same test rows.

Every model is trained through the recipes themselves (configs/data/ml-latest-small.yaml + a
configs/model/*.yaml + configs/trainer/cpu.yaml, via the LightningCLI), with the same budget, and
tested from its best validation checkpoint. `--cold-fractions 0.2` withholds a seeded 20% of items
from training (`cold_item_fraction`; 0 = warm); `test_cold/` is measured on the test rows whose target
is such an item, "warm NDCG@10" on the others. Each row keeps its per-test-row NDCG@10, so runs made
separately (`--output` per process) can be merged and compared pairwise (`--merge`).
The text encoders need the encode stage's cache (run first, or pass --encode):

    .venv/bin/lightning-rec predict --data configs/data/ml-latest-small.yaml -c configs/encode-ml-latest-small.yaml
    nice -n 5 .venv/bin/python benchmarks/encoders.py --epochs 5 --cold-fractions 0.1 0.2 0.4
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import lightning as L
import torch

from lightning_rec.cli import RecommenderCLI
from lightning_rec.metrics import ndcg_of_ranks, pessimistic_ranks

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
KEYS = ["test/ndcg@10", "test/recall@10", "warm/ndcg@10", "test_cold/ndcg@10", "test_cold/recall@10"]


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


def test_rows(model, datamodule) -> dict:
    """Per test row: NDCG@10 and whether its target is cold (no training event), for paired comparisons."""
    model.eval()
    ndcg, cold = [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            ranks = pessimistic_ranks(model.score(batch["input"], batch["history"]), batch["target"])
            ndcg.append(ndcg_of_ranks(ranks, 10))
            cold.append(model.popularity[batch["target"]] == 0)
    return {"ndcg@10": torch.cat(ndcg).tolist(), "cold": torch.cat(cold).tolist()}


def run_model(name: str, cold: float, args) -> dict:
    config, item, sequence = MODELS[name]
    root = ROOT / args.workdir / f"{args.label or name}-cold{cold}"
    cli = RecommenderCLI(
        args=[
            "--data",
            DATA,
            "-c",
            config,
            "-c",
            "configs/trainer/cpu.yaml",
            *common_args(root, cold, args),
            f"--trainer.max_epochs={args.epochs}",
            *shlex.split(args.model_args),
        ],
        run=False,
    )
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    (result,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
    described = {"item_encoder": item, "sequence_encoder": sequence, "train_seconds": round(seconds, 1)}
    return {"model": args.label or name, **described, **pick(result, test_rows(cli.model, cli.datamodule))}


def run_baseline(name: str, cold: float, args) -> dict:
    root = ROOT / args.workdir / f"{name}-cold{cold}"
    cli = RecommenderCLI(args=["--data", DATA, f"--model={BASELINES[name]}", *common_args(root, cold, args)], run=False)
    (result,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    rows = test_rows(cli.model, cli.datamodule)
    return {"model": name, "item_encoder": "-", "sequence_encoder": "-", "train_seconds": 0.0, **pick(result, rows)}


def pick(result: dict, rows: dict) -> dict:
    ndcg, cold = torch.tensor(rows["ndcg@10"]), torch.tensor(rows["cold"], dtype=torch.bool)
    result = {**result, "warm/ndcg@10": ndcg[~cold].mean()}
    return {**{key: round(float(result[key]), 4) if key in result else None for key in KEYS}, "rows": rows}


def paired(a: dict, b: dict, subset: str) -> tuple[float, float, int]:
    """Mean and standard error of a - b in per-row NDCG@10 over the `subset` ("cold", "warm", "all")
    of the test rows both were measured on (same split and cold items: same rows in the same order)."""
    if a["rows"]["cold"] != b["rows"]["cold"]:
        raise ValueError(f"{a['model']} and {b['model']} were not tested on the same rows")
    difference = torch.tensor(a["rows"]["ndcg@10"]) - torch.tensor(b["rows"]["ndcg@10"])
    cold = torch.tensor(a["rows"]["cold"], dtype=torch.bool)
    difference = {"cold": difference[cold], "warm": difference[~cold], "all": difference}[subset]
    n = len(difference)
    return float(difference.mean()), float(difference.std() / n**0.5) if n > 1 else float("nan"), n


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"ml-latest-small, leave-one-out, full ranking; {args.epochs} epochs of windows (max_len {args.max_len}, "
        f"batch {args.batch_size}), best validation NDCG@10 checkpoint; seed {args.seed}. Warm NDCG@10: the test "
        "rows whose target has training events; cold: the others.",
        "",
        "| withheld | model | item enc. | seq. enc. | NDCG@10 | Recall@10 | warm NDCG@10 | cold NDCG@10 "
        "| cold Recall@10 | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        values = [r[k] if r[k] is not None else "-" for k in KEYS]
        lines.append(
            f"| {r['cold_item_fraction']:.0%} | {r['model']} | {r['item_encoder']} | {r['sequence_encoder']} | "
            + " | ".join(f"{v:.4f}" if isinstance(v, float) else v for v in values)
            + f" | {r['train_seconds']:.0f} |"
        )
    hybrids = dict.fromkeys(r["model"] for r in rows if r["item_encoder"] == "hybrid")  # each label, in order
    comparisons = [
        (fraction, a, b, subset)
        for fraction in sorted({r["cold_item_fraction"] for r in rows})
        for a in hybrids
        for b, subset in [("sasrec-text", "cold"), ("sasrec-id", "warm"), ("sasrec-id", "all")]
    ]
    by_key = {(r["cold_item_fraction"], r["model"]): r for r in rows}
    found = [(f, a, b, s) for f, a, b, s in comparisons if (f, a) in by_key and (f, b) in by_key]
    if found:
        lines += ["", "Paired differences in NDCG@10 (same test rows), mean ± standard error:", ""]
        lines += ["| withheld | models | rows | difference |", "| --- | --- | --- | --- |"]
        for fraction, a, b, subset in found:
            mean, se, n = paired(by_key[fraction, a], by_key[fraction, b], subset)
            if n:
                lines.append(f"| {fraction:.0%} | {a} - {b} ({subset}) | {n} | {mean:+.4f} ± {se:.4f} |")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], args) -> None:
    output = ROOT / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}) + "\n")
    output.with_suffix(".md").write_text(markdown(rows, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--cold-fractions", nargs="+", type=float, default=[0.0, 0.2], help="0: nothing withheld")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-args", default="", help="extra CLI arguments for every model")
    parser.add_argument("--label", default="", help="the model name in the table (with --model-args)")
    parser.add_argument("--encode", action="store_true", help="run the encode stage first (reuses an up-to-date cache)")
    parser.add_argument("--merge", nargs="+", default=[], help="earlier runs' JSON: one table of all")
    parser.add_argument("--workdir", default="outputs/benchmarks/encoders")
    parser.add_argument("--output", default="benchmarks/results/encoders-ml-latest-small")
    args = parser.parse_args()

    if args.merge:
        rows = [row for path in args.merge for row in json.loads(Path(path).read_text())["rows"]]
        rows.sort(key=lambda r: r["cold_item_fraction"])
        write(rows, args)
        print(markdown(rows, args))
        return
    if args.encode:
        RecommenderCLI(args=["predict", "--data", DATA, "-c", "configs/encode-ml-latest-small.yaml"])
    rows = []
    for cold in args.cold_fractions:
        for name in BASELINES if args.baselines else []:
            L.seed_everything(args.seed)
            rows.append({"cold_item_fraction": cold, **run_baseline(name, cold, args)})
        for name in args.models:
            rows.append({"cold_item_fraction": cold, **run_model(name, cold, args)})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "rows"}), flush=True)
            write(rows, args)  # after every model, so a long run that is stopped keeps what it measured
    write(rows, args)
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
