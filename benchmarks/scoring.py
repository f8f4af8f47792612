"""Speed of the state that full-ranking scoring reads: the last position only (`encode(..., last=True)`,
what `SequentialRecommender.score`, the meta-learner's rollouts and its user states use) against
encoding every position and keeping the last, in the same run.

    python benchmarks/scoring.py --checkpoint outputs/sasrec-ml-latest-small/checkpoints/best.ckpt

Batches of full-length histories of random items (the encoder's max_len), eval mode, one thread by
default; prints the median seconds of each path, their ratio, and the largest difference between
the two states.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lightning_rec.stages.pretraining import SequentialRecommender


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="SequentialRecommender checkpoint")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = SequentialRecommender.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=False).eval()
    length = getattr(model.sequence_encoder, "max_len", 50)
    histories = torch.randint(1, model.num_items + 1, (args.batch, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        items = model.item_encoder()
        every = median_seconds(lambda: model.encode(histories, items)[:, -1], args.repeats)
        last = median_seconds(lambda: model.encode(histories, items, last=True)[:, -1], args.repeats)
        gap = (
            (model.encode(histories, items)[:, -1] - model.encode(histories, items, last=True)[:, -1])
            .abs()
            .max()
            .item()
        )
    print(
        f"{type(model.sequence_encoder).__name__}, {args.batch} histories of {length} items, {args.threads} thread(s)"
    )
    print(
        f"every position: {every * 1000:.1f} ms, last position: {last * 1000:.1f} ms, "
        f"speed-up {every / last:.2f}x, largest difference {gap:.1e}"
    )


if __name__ == "__main__":
    main()
