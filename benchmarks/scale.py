"""A million-item catalogue on one machine: one training epoch, one full evaluation, top-k retrieval.

    python benchmarks/scale.py                       # 1,000,000 items, 100,000 users x 20 events
    python benchmarks/scale.py --items 20000 --users 2000 --events 10     # a quick look

Generates a synthetic catalogue (not stored: written to a temporary folder and removed): items
in clusters of 100, each user walking through a chain of clusters (the next event stays in the
cluster with probability 0.8, else moves to the next one), items within a cluster drawn by a Zipf
law, so there is both sequence structure and a long tail; every item is in the item file, so the
catalogue has exactly --items items. Then, through the real CLI classes and Trainer: SASRec (dim 64)
with `SampledSoftmax(sampling: popularity)` (logQ-corrected) for one epoch, one full-ranking test
(every test user against every item, in evaluation batches), and top-10 retrieval for --queries test
users: exact (`ExactTopK`, chunked) against the faiss IVF index (`FaissTopK`) at several probe counts,
reporting recall@10 of the index against exact top-10 and milliseconds per query. Prints each
phase's seconds and the process's peak resident memory after it; --json writes the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from lightning_rec.cli import RecommenderCLI
from lightning_rec.retrieval import ExactTopK, FaissTopK

CLUSTER = 100


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def synthetic_events(items: int, users: int, events: int, seed: int = 0) -> pd.DataFrame:
    """users x events rows (user, item, timestamp): cluster chains with Zipf items inside clusters."""
    rng = np.random.default_rng(seed)
    clusters = items // CLUSTER
    moves = rng.random((users, events)) > 0.8
    moves[:, 0] = False
    cluster = (rng.integers(clusters, size=(users, 1)) + moves.cumsum(1)) % clusters
    zipf = 1.0 / np.arange(1, CLUSTER + 1)
    within = rng.choice(CLUSTER, size=(users, events), p=zipf / zipf.sum())
    item = np.minimum(cluster * CLUSTER + within + 1, items)
    return pd.DataFrame(
        {
            "user": np.repeat(np.arange(users), events),
            "item": item.reshape(-1),
            "timestamp": np.tile(np.arange(events), users),
        }
    )


def recipe(folder: Path, events: Path, item_file: Path, negatives: int) -> list[str]:
    config = {
        "seed_everything": 0,
        "data": {
            "class_path": "lightning_rec.data.SequenceDataModule",
            "init_args": {
                "source": {
                    "class_path": "lightning_rec.data.sources.InteractionFile",
                    "init_args": {"path": str(events), "item_path": str(item_file)},
                },
                "items_without_events": True,
                "max_len": 50,
                "batch_size": 256,
                "eval_batch_size": 128,
                "cache_dir": None,
            },
        },
        "model": {
            "class_path": "lightning_rec.stages.SequentialRecommender",
            "init_args": {
                "item_encoder": {"class_path": "lightning_rec.encoders.IDItemEncoder", "init_args": {"dim": 64}},
                "sequence_encoder": {
                    "class_path": "lightning_rec.encoders.TransformerEncoder",
                    "init_args": {"dim": 64, "num_layers": 2, "num_heads": 2, "max_len": 50, "dropout": 0.2},
                },
                "objective": {
                    "class_path": "lightning_rec.objectives.SampledSoftmax",
                    "init_args": {"num_negatives": negatives, "sampling": "popularity"},
                },
                "lr": 0.001,
                "warmup_steps": 50,
                "eval_ks": [10],
            },
        },
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 1,
            "logger": False,
            "enable_checkpointing": False,
            "limit_val_batches": 0,
            "default_root_dir": str(folder / "run"),
        },
    }
    path = folder / "scale.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return ["-c", str(path)]


def timed(label: str, results: dict, fn):
    start = time.perf_counter()
    value = fn()
    results[label] = {"seconds": time.perf_counter() - start, "peak_gib": peak_gib()}
    print(f"{label}: {results[label]['seconds']:.1f} s, peak resident memory {results[label]['peak_gib']:.2f} GiB")
    return value


def retrieval(model, data, queries: int, probes: list[int], results: dict) -> None:
    """Exact top-10 of `queries` test users against the faiss index at each probe count."""
    rows = data.test_dataloader().dataset
    users = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:queries]
    batch = rows.__getitems__(users.tolist())
    with torch.inference_mode():
        items = model.item_encoder()
        states = model.user_states(batch["input"], items)
        history = batch["history"]
        start = time.perf_counter()
        _, exact = ExactTopK(items).search(states, 10, history)
        results["exact_ms_per_query"] = 1000 * (time.perf_counter() - start) / queries
        print(f"exact top-10: {results['exact_ms_per_query']:.2f} ms per query (batches of {queries})")
        index = timed("faiss_build", results, lambda: FaissTopK(items, probes=probes[0]))
        results["faiss"] = []
        for count in probes:
            index.index.nprobe = count
            start = time.perf_counter()
            _, found = index.search(states, 10, history)
            ms = 1000 * (time.perf_counter() - start) / queries
            recall = float((found.unsqueeze(-1) == exact.unsqueeze(1)).any(-1).float().mean())
            results["faiss"].append({"probes": count, "recall@10_vs_exact": recall, "ms_per_query": ms})
            lists = index.index.nlist
            print(f"faiss IVF {lists} lists, {count} probes: recall@10 vs exact {recall:.4f}, {ms:.3f} ms/query")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=20, help="events per user")
    parser.add_argument("--negatives", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=2000, help="test users of the retrieval comparison")
    parser.add_argument("--probes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"items": args.items, "users": args.users, "events_per_user": args.events}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        frame = timed("generate", results, lambda: synthetic_events(args.items, args.users, args.events))
        frame.to_csv(folder / "events.csv", index=False)
        pd.DataFrame({"item": np.arange(1, args.items + 1), "title": "item"}).to_csv(folder / "items.csv", index=False)
        del frame
        config = recipe(folder, folder / "events.csv", folder / "items.csv", args.negatives)
        cli = RecommenderCLI(args=config, run=False)
        data, model, trainer = cli.datamodule, cli.model, cli.trainer
        timed("setup", results, lambda: data.setup("fit"))
        print(f"{data.data.num_items} items, {data.data.num_users} users")
        L.seed_everything(0)
        timed("train_epoch", results, lambda: trainer.fit(model, data))
        (metrics,) = timed("full_evaluation", results, lambda: trainer.test(model, data, verbose=False))
        results["test"] = {key: float(value) for key, value in metrics.items()}
        print(f"test: {results['test']}")
        model.eval()
        retrieval(model, data, args.queries, args.probes, results)
    print(f"{args.threads} threads; peak resident memory of the whole run {peak_gib():.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
