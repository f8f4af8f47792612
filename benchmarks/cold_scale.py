"""The hybrid's cold_scale dial on a trained checkpoint: validation and test NDCG@10 on cold targets
(no training event) and warm targets, and the cold items' share of the top 10, for each scale of the
vectors of items without ID (HybridItemEncoder.cold_scale; nothing is retrained). Writes JSON and a
plot, and names two scales read off validation alone: where cold items get as large a share of the
top 10 as cold targets have of the validation rows ("exposure"), and where cold and warm targets reach
the same NDCG@10 ("balance").

    python benchmarks/encoders.py --models sasrec-hybrid --cold-fractions 0.2 --label hybrid-cold \\
        --model-args="--model.init_args.item_encoder.init_args.id_dropout=0.5" --workdir outputs/bench
    python benchmarks/cold_scale.py --checkpoint outputs/bench/hybrid-cold-cold0.2/checkpoints/best.ckpt \\
        --cold-fraction 0.2 --output benchmarks/results/cold-scale-ml-latest-small
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lightning_rec.cli import RecommenderCLI
from lightning_rec.metrics import ndcg_of_ranks, pessimistic_ranks
from lightning_rec.stages import SequentialRecommender

ROOT = Path(__file__).resolve().parents[1]
DATA = "configs/data/ml-latest-small.yaml"


def measure(model: SequentialRecommender, loader, k: int = 10) -> dict:
    """NDCG@k on cold and on warm targets, the cold share of the rows and of the top-k slots."""
    cold_item = model.popularity == 0
    cold_item[0] = False
    ndcg, cold, share = [], [], []
    with torch.no_grad():
        for batch in loader:
            scores = model.score(batch["input"], batch["history"])
            ndcg.append(ndcg_of_ranks(pessimistic_ranks(scores, batch["target"]), k))
            cold.append(cold_item[batch["target"]])
            share.append(cold_item[scores.topk(k, dim=1).indices].float().mean(1))
    ndcg, cold = torch.cat(ndcg), torch.cat(cold)
    return {
        "cold_ndcg": float(ndcg[cold].mean()),
        "warm_ndcg": float(ndcg[~cold].mean()),
        "cold_rows": float(cold.float().mean()),
        "cold_top_share": float(torch.cat(share).mean()),
    }


def crossing(scales: list[float], gap: list[float]) -> float | None:
    """The scale where `gap` (rising with the scale) crosses 0, linearly interpolated; None if it does not."""
    for (s0, g0), (s1, g1) in zip(zip(scales, gap), zip(scales[1:], gap[1:])):
        if g0 <= 0 <= g1:
            return s0 if g1 == g0 else s0 + (s1 - s0) * -g0 / (g1 - g0)
    return None


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [row["cold_scale"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("val", "-"), ("test", "--")):
        left.plot(scales, [r[split]["cold_ndcg"] for r in rows], style, color="tab:blue", label=f"{split} cold")
        left.plot(scales, [r[split]["warm_ndcg"] for r in rows], style, color="tab:orange", label=f"{split} warm")
        right.plot(scales, [r[split]["cold_top_share"] for r in rows], style, color="tab:blue", label=split)
    right.axhline(rows[0]["val"]["cold_rows"], color="grey", lw=0.8, label="cold share of val rows")
    left.set(xlabel="cold_scale", ylabel="NDCG@10", title="targets without / with training events")
    right.set(xlabel="cold_scale", ylabel="share", title="items without ID in the top 10")
    left.legend(), right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--cold-fraction", type=float, required=True, help="the fraction it was trained with")
    parser.add_argument("--seed", type=int, default=0, help="as it was trained (cold items are drawn with it)")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4, 1.5])
    parser.add_argument("--output", default="benchmarks/results/cold-scale-ml-latest-small")
    args = parser.parse_args()

    cli = RecommenderCLI(
        args=["--data", DATA, "-c", "configs/model/hybrid-sasrec.yaml", f"--seed_everything={args.seed}",
              f"--data.init_args.cold_item_fraction={args.cold_fraction}", "--trainer.logger=false"],
        run=False,
    )  # fmt: skip
    cli.datamodule.setup("test")
    model = SequentialRecommender.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=False).eval()
    if not hasattr(model.item_encoder, "cold_scale"):
        raise SystemExit(f"{args.checkpoint}: its item encoder has no cold_scale (not a HybridItemEncoder)")
    rows = []
    for scale in args.scales:
        model.item_encoder.cold_scale = scale
        row = {"cold_scale": scale, "val": measure(model, cli.datamodule.val_dataloader())}
        row["test"] = measure(model, cli.datamodule.test_dataloader())
        rows.append(row)
        print(json.dumps(row), flush=True)
    scales = [row["cold_scale"] for row in rows]
    chosen = {
        "exposure": crossing(scales, [r["val"]["cold_top_share"] - r["val"]["cold_rows"] for r in rows]),
        "balance": crossing(scales, [r["val"]["cold_ndcg"] - r["val"]["warm_ndcg"] for r in rows]),
    }
    print(json.dumps({"chosen on validation": chosen}))
    output = ROOT / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows, "chosen": chosen}) + "\n")
    plot(rows, output.with_suffix(".png"))


if __name__ == "__main__":
    main()
