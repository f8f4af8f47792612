"""Meta-test of several meta-learning variants on ml-latest-small, side by side.

Each variant is `lightning-rec fit` then `lightning-rec test` with configs/meta-ml-latest-small.yaml
(plus the simulator config when --simulator is given) and a few overrides, in its own process; the
meta-test tables are collected into one CSV and one Markdown table with fit and test times.

    python benchmarks/meta.py --pretrained outputs/sasrec-ml-latest-small/checkpoints/best.ckpt
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "fomaml-head": [],
    "fomaml-top_layers": ["--model.init_args.adapt", "top_layers"],
    "reptile-head": ["--model.init_args.algorithm", "lightning_rec.meta.Reptile"],
}


def run(command: list[str], log: Path) -> float:
    """Run one CLI command (one thread: these tensors are small), log its output, return seconds."""
    start = time.time()
    with open(log, "w") as out:
        done = subprocess.run(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"},
        )
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {done.returncode}); see {log}")
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="SequentialRecommender checkpoint (the plain start)")
    parser.add_argument(
        "--simulator", help="SimulatorTraining checkpoint: adds returns and the policy-gradient variant"
    )
    parser.add_argument("--steps", type=int, default=300, help="meta-training steps per variant")
    parser.add_argument(
        "--variants", nargs="*", default=None, help=f"subset of {list(VARIANTS)} (+ fomaml-head-pg with a simulator)"
    )
    parser.add_argument("--out", default="benchmarks/results/meta")
    args = parser.parse_args()
    variants = dict(VARIANTS)
    configs = ["-c", "configs/meta-ml-latest-small.yaml"]
    if args.simulator:
        configs += [
            "-c",
            "configs/meta-env-ml-latest-small.yaml",
            "--model.init_args.environment.init_args.checkpoint",
            args.simulator,
        ]
        variants["fomaml-head-pg"] = [
            "--data.init_args.segment_tasks_per_epoch",
            "16",
            "--model.init_args.inner_loss",
            "policy_gradient",
        ]
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    tables = []
    for name in args.variants or variants:
        root = out / name
        common = [
            *configs,
            "--model.init_args.checkpoint",
            args.pretrained,
            "--trainer.default_root_dir",
            str(root),
            *variants[name],
        ]
        fit = run(
            [sys.executable, "-m", "lightning_rec.cli", "fit", *common, "--trainer.max_steps", str(args.steps)],
            out / f"{name}-fit.log",
        )
        test = run(
            [
                sys.executable,
                "-m",
                "lightning_rec.cli",
                "test",
                *common,
                "--ckpt_path",
                str(root / "checkpoints" / "best.ckpt"),
            ],
            out / f"{name}-test.log",
        )
        table = pd.read_csv(root / "meta" / "meta_test.csv")
        tables.append(table.assign(variant=name, fit_s=round(fit), test_s=round(test)))
        print(f"{name}: fit {fit:.0f} s, test {test:.0f} s", flush=True)
    result = pd.concat(tables)[
        [
            "variant",
            "tasks",
            "metric",
            "plain_before",
            "meta_before",
            "plain_adapted",
            "meta_adapted",
            "meta_vs_plain_adapted",
            "fit_s",
            "test_s",
        ]
    ]
    result.to_csv(out / "meta.csv", index=False)
    from lightning_rec.rl.tables import to_markdown

    (out / "meta.md").write_text(to_markdown(result) + "\n")
    print(result.to_string(index=False))


if __name__ == "__main__":
    main()
