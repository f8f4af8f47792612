"""The one check of a learned user simulator against unbiased feedback: Coat's ratings of 16
randomly shown coats per user (test.ascii, missing at random), predicted by the simulator fit on
the users' self-selected coats (train.ascii, configs/coat/simulator.yaml), by popularity and by a
matrix factorisation fit on train.ascii.

    lightning-rec fit -c configs/coat/simulator.yaml
    python benchmarks/coat_check.py --checkpoint outputs/simulator-coat/checkpoints/best.ckpt

Predictors of a test (user, coat) rating: the train mean; popularity (the coat's mean train rating,
shrunk to the train mean by `--shrinkage` pseudo-ratings); MF (biased, l2 chosen among --l2 on a
random tenth of train.ascii, then refit on all of it); and each simulator role's rating head on its
own users, from their whole train history. Printed per predictor, over the same test pairs (each
role's users): RMSE and MAE, the mean prediction against the test mean (the bias of self-selected
feedback), and the AUC with which the predicted rating (auc_rating), or the predictor's other
score (auc_score: popularity's train count, the simulator's click probability), tells the coats
a user rated 4-5 from the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lightning_rec.data.datasets import gather_windows  # noqa: E402
from lightning_rec.data.sources.coat import read_matrix  # noqa: E402
from lightning_rec.rl.behaviour import UserBehaviour  # noqa: E402
from lightning_rec.rl.matrix_factorisation import fit_matrix_factorisation  # noqa: E402
from lightning_rec.rl.simulator_artifact import load_simulators  # noqa: E402

LIKED = 4.0


def auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[positive].unsqueeze(1), scores[~positive].unsqueeze(0)
    return float(((pos > neg).double() + 0.5 * (pos == neg).double()).mean())


def mf_predictor(train: np.ndarray, l2_grid: list[float], dim: int, seed: int):
    """Biased MF on train's observed cells, its l2 chosen on a random tenth of them."""
    users, items = np.nonzero(train)
    values = torch.tensor(train[users, items], dtype=torch.float)
    users, items = torch.from_numpy(users), torch.from_numpy(items)
    held = torch.rand(len(values), generator=torch.Generator().manual_seed(seed)) < 0.1
    shape = train.shape
    errors = {}
    for l2 in l2_grid:
        fit = fit_matrix_factorisation(users[~held], items[~held], values[~held], *shape, dim=dim, l2=l2, seed=seed)
        errors[l2] = float((fit.predict(users[held], items[held]).clamp(1, 5) - values[held]).square().mean().sqrt())
    best = min(errors, key=errors.get)
    return fit_matrix_factorisation(users, items, values, *shape, dim=dim, l2=best, seed=seed), best, errors


def simulator_predictions(checkpoint: str, directory: str, test_users, test_items):
    """{role: (mask over the test pairs of the role's users, ratings, click probabilities)}."""
    from lightning_rec.data.datamodule import SequenceDataModule
    from lightning_rec.data.sources import Coat

    datamodule = SequenceDataModule(Coat(directory, "train"), max_len=30, cache_dir=None)
    datamodule.setup()
    data = datamodule.data
    simulators = load_simulators(checkpoint, data, datamodule.split.train_end, UserBehaviour())
    rows = torch.from_numpy(pd.Index(data.user_ids).get_indexer(test_users))
    columns = torch.from_numpy(pd.Index(data.item_ids).get_indexer(test_items) + 1)  # 0: not in train
    out = {}
    for role, simulator in simulators.items():
        model, history_len = simulator.model, simulator.history_len
        mine = torch.zeros(data.num_users, dtype=torch.bool)
        mine[simulator.users] = True
        keep = (rows >= 0) & (columns > 0)
        keep &= mine[rows.clamp(min=0)]
        users = rows[keep]
        starts = data.offsets[users]
        history = gather_windows(data.items, starts, data.offsets[users + 1], history_len)
        with torch.no_grad():
            state = model.start(users, history)
            ratings = model.rating(state, columns[keep].unsqueeze(1)).squeeze(1)
            clicks = model.click_probability(state, columns[keep].unsqueeze(1)).squeeze(1)
        out[role] = (keep, ratings, clicks)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/coat")
    parser.add_argument("--checkpoint", default="outputs/simulator-coat/checkpoints/best.ckpt")
    parser.add_argument("--l2", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--shrinkage", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the table here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    train = read_matrix(Path(args.data, "train.ascii"))
    test = read_matrix(Path(args.data, "test.ascii"))
    test_users, test_items = np.nonzero(test)
    truth = torch.tensor(test[test_users, test_items], dtype=torch.float)
    liked = truth >= LIKED

    observed = train > 0
    mean = float(train[observed].mean())
    counts = observed.sum(0)
    item_mean = (train.sum(0) + args.shrinkage * mean) / (counts + args.shrinkage)
    mf, l2, l2_errors = mf_predictor(train, args.l2, args.dim, args.seed)
    mf_ratings = mf.predict(torch.from_numpy(test_users), torch.from_numpy(test_items)).clamp(1, 5)

    sims = simulator_predictions(args.checkpoint, args.data, test_users, test_items)
    rows = []

    def report(name: str, mask: torch.Tensor, predicted: torch.Tensor, score: torch.Tensor | None = None) -> None:
        target, positive = truth[mask], liked[mask]
        error = predicted - target
        rows.append(
            {
                "predictor": name,
                "pairs": int(mask.sum()),
                "rmse": float(error.square().mean().sqrt()),
                "mae": float(error.abs().mean()),
                "mean_prediction": float(predicted.mean()),
                "test_mean": float(target.mean()),
                "auc_rating": auc(predicted.double(), positive),
                "auc_score": None if score is None else auc(score.double(), positive),
            }
        )

    popularity = torch.tensor(counts[test_items], dtype=torch.float)
    for role, (keep, ratings, clicks) in sims.items():
        report(f"train mean ({role} users)", keep, torch.full((int(keep.sum()),), mean))
        report(f"popularity ({role} users)", keep, torch.tensor(item_mean[test_items])[keep].float(), popularity[keep])
        report(f"MF l2={l2:g} ({role} users)", keep, mf_ratings[keep])
        report(f"simulator {role}", keep, ratings, clicks)
    width = max(len(row["predictor"]) for row in rows)
    validation = json.dumps({str(k): round(v, 4) for k, v in l2_errors.items()})
    print(f"MF validation RMSE by l2 (a tenth of train.ascii): {validation}")
    print(f"{'predictor':<{width}}  pairs   rmse    mae  mean_pred  test_mean  auc_rating  auc_score")
    for row in rows:
        score = "-" if row["auc_score"] is None else f"{row['auc_score']:.3f}"
        print(
            f"{row['predictor']:<{width}}  {row['pairs']:5d}  {row['rmse']:.3f}  {row['mae']:.3f}  "
            f"{row['mean_prediction']:9.3f}  {row['test_mean']:9.3f}  {row['auc_rating']:10.3f}  {score:>9}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
