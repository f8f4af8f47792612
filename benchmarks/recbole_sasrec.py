"""RecBole 1.2.1 SASRec, the peer of our SASRec in the foundation benchmark.

Runs INSIDE the RecBole venv (``bash benchmarks/setup_recbole.sh`` builds it), as a
subprocess of ``benchmarks/benchmark.py``:

    benchmarks/.recbole-venv/bin/python benchmarks/recbole_sasrec.py \
        --inter data.tsv --out result.json [--epochs 200] [--max-seq-len 50] \
        [--seed 0] [--stopping-step 10] [--protocol masked|native] [--threads N]
        [--max-train-seconds S]

``data.tsv`` is tab-separated with the header ``user<TAB>item<TAB>timestamp``: integer
ids, and ``timestamp`` the event's position in its user's chronological sequence (so
the order is unambiguous). It is converted to a RecBole atomic ``.inter`` file in a
temporary dataset folder and trained with RecBole's own data pipeline, model and
Trainer: leave-one-out by time (last item test, second-to-last validation), no
filtering, full ranking, Recall/NDCG@10, validation every epoch, early stopping on
NDCG@10, CE loss, RecBole's default SASRec hyper-parameters.

Every evaluation is scored under two protocols from the same score matrix:

* ``native``: RecBole's own full-sort evaluation (for sequential models it masks only
  the padding item, not the user's history; ties fall wherever ``torch.topk`` puts them);
* ``masked``: our protocol (the user's items before the target are masked out of the
  ranking, ties and NaN scores count against the model).

``--protocol`` (default ``masked``) picks the one that drives early stopping and the
choice of the best epoch, and whose numbers fill the top-level fields of the JSON; the
other one's numbers for the same checkpoints are in ``by_protocol``.

Output JSON (top level):
    valid_curve         [[seconds since training started, valid NDCG@10], ...] per epoch
    best_valid_ndcg@10  best validation NDCG@10
    best_epoch          0-based epoch of the best validation NDCG@10 (checkpoint tested)
    train_seconds       wall-clock seconds of Trainer.fit (training + validation)
    test                {"ndcg@10", "recall@10"} of the best checkpoint
    epochs_run          epochs trained
    stopped_by          "early stopping", "epochs" or "time budget" (--max-train-seconds)
    config              the RecBole settings that matter, versions, threads
    protocol            "masked" or "native"
    by_protocol         {"masked": {...}, "native": {...}} same fields per protocol
    epochs              per epoch: seconds, train_seconds (validation time excluded),
                        valid metrics under both protocols
    data                users / items / interactions and evaluated users
    prep_seconds        RecBole dataset loading + augmentation + split
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

# RecBole 1.2.1 saves the whole Config inside its checkpoints and reloads them with a
# plain torch.load: torch >= 2.6 (weights_only=True by default) refuses that.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import warnings  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*pkg_resources.*")
warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import recbole  # noqa: E402
import torch  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.sequential_recommender import SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402

DATASET = "lrbench"  # any name without a preset yaml inside RecBole
K = 10
PROTOCOLS = ("masked", "native")


class BadInput(ValueError):
    """The input TSV is not what this script expects."""


class _OutOfTime(Exception):
    """Raised after an epoch once the training time budget is spent."""


# --------------------------------------------------------------------------- data


def read_inter_tsv(path: Path) -> pd.DataFrame:
    """Read and check ``user<TAB>item<TAB>timestamp`` (integers)."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    with path.open() as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
    if header != ["user", "item", "timestamp"]:
        raise BadInput(f"{path}: header must be 'user<TAB>item<TAB>timestamp', got {header!r}")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if df.empty:
        raise BadInput(f"{path}: no interactions after the header")
    for col in df.columns:
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() | (num != num.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BadInput(f"{path}: line {row + 2}, column {col!r}: expected an integer, got {df[col].iloc[row]!r}")
        df[col] = num.astype(np.int64)
    dup = df.duplicated(["user", "timestamp"])
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise BadInput(
            f"{path}: line {row + 2}: user {df['user'].iloc[row]} has two "
            f"events at timestamp {df['timestamp'].iloc[row]}; timestamps must order "
            "each user's events unambiguously"
        )
    return df


def write_atomic(df: pd.DataFrame, data_dir: Path) -> Path:
    """Write RecBole's atomic ``<dataset>.inter`` file and return the dataset folder."""
    ds_dir = data_dir / DATASET
    ds_dir.mkdir(parents=True, exist_ok=True)
    out = df.rename(
        columns={
            "user": "user_id:token",
            "item": "item_id:token",
            "timestamp": "timestamp:float",
        }
    )
    out.to_csv(ds_dir / f"{DATASET}.inter", sep="\t", index=False)
    return ds_dir


def history_table(df: pd.DataFrame, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per RecBole user id: the user's items and their timestamps, padded.

    Returns ``items[u, j]`` (RecBole item ids, 0 = pad) and ``stamps[u, j]`` (+inf = pad),
    in time order, so the items before a target at time ``t`` are ``stamps[u] < t``.
    """
    uid, iid = dataset.uid_field, dataset.iid_field
    u = np.array([dataset.field2token_id[uid][str(x)] for x in df["user"]], dtype=np.int64)
    i = np.array([dataset.field2token_id[iid][str(x)] for x in df["item"]], dtype=np.int64)
    t = df["timestamp"].to_numpy(dtype=np.float64)
    order = np.lexsort((t, u))
    u, i, t = u[order], i[order], t[order]
    counts = np.bincount(u, minlength=dataset.user_num)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(u)) - starts[u]
    width = max(int(counts.max()), 1)
    items = torch.zeros((dataset.user_num, width), dtype=torch.long)
    stamps = torch.full((dataset.user_num, width), math.inf, dtype=torch.float64)
    items[u, col] = torch.from_numpy(i)
    stamps[u, col] = torch.from_numpy(t)
    return items, stamps


# --------------------------------------------------------------------------- trainer


class TimedTrainer(Trainer):
    """RecBole's Trainer, plus a per-epoch record (time since fit started, validation
    metrics) and our masked/pessimistic metrics computed beside RecBole's own."""

    def __init__(self, config, model, hist_items, hist_stamps, protocol, max_train_seconds=None):
        super().__init__(config, model)
        self.max_train_seconds = max_train_seconds
        self.stopped_by = None
        self.hist_items = hist_items
        self.hist_stamps = hist_stamps
        self.protocol = protocol
        self.records: list[dict] = []
        self._t0 = None
        self._eval_seconds = 0.0
        self._acc = None

    # -- our protocol, accumulated batch by batch ---------------------------------
    def _masked_ranks(self, interaction, scores: torch.Tensor) -> torch.Tensor:
        """0-based rank of each row's target with the user's earlier items masked and
        ties (and NaN scores) counted against the model."""
        uid = interaction[self.config["USER_ID_FIELD"]].cpu()
        target = interaction[self.config["ITEM_ID_FIELD"]].cpu()
        when = interaction[self.config["TIME_FIELD"]].cpu().double()
        s = scores.detach().float().cpu().clone()
        rows = torch.arange(len(uid))
        t = s[rows, target].clone()
        before = self.hist_stamps[uid] < when[:, None]
        r, c = before.nonzero(as_tuple=True)
        s[r, self.hist_items[uid][r, c]] = -math.inf
        s[:, 0] = -math.inf  # padding id, never a candidate
        s[rows, target] = t  # the target itself is never masked
        ahead = (s >= t[:, None]) | torch.isnan(s)
        ahead[rows, target] = False
        rank = ahead.sum(dim=1)
        # A NaN target score is a miss whatever the other scores are.
        return torch.where(torch.isnan(t), torch.full_like(rank, s.shape[1] + K), rank)

    def _full_sort_batch_eval(self, batched_data):
        interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(batched_data)
        if self._acc is not None:
            rank = self._masked_ranks(interaction, scores)
            hit = rank < K
            self._acc["n"] += len(rank)
            self._acc["recall"] += hit.sum().item()
            self._acc["ndcg"] += torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0), 0.0).sum().item()
        return interaction, scores, positive_u, positive_i

    def evaluate_both(self, eval_data, **kw) -> dict:
        """Evaluate once; return {"native": {...}, "masked": {...}, "n": rows}."""
        self._acc = {"n": 0, "recall": 0.0, "ndcg": 0.0}
        try:
            native = self.evaluate(eval_data, **kw)
        finally:
            acc, self._acc = self._acc, None
        n = max(acc["n"], 1)
        return {
            "native": {
                "ndcg@10": float(native[f"ndcg@{K}"]),
                "recall@10": float(native[f"recall@{K}"]),
            },
            "masked": {"ndcg@10": acc["ndcg"] / n, "recall@10": acc["recall"] / n},
            "n": acc["n"],
        }

    # -- hooks into RecBole's fit loop --------------------------------------------
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's fit, timed, and stopped after the epoch that passes
        ``max_train_seconds`` (RecBole calls ``callback_fn`` after it has saved the
        epoch's checkpoint, so the best model so far is kept)."""

        def after_epoch(epoch_idx, valid_score):
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score)
            if self.max_train_seconds is not None and time.perf_counter() - self._t0 >= self.max_train_seconds:
                raise _OutOfTime

        self._t0 = time.perf_counter()
        self._eval_seconds = 0.0
        self.stopped_by = None
        try:
            out = super().fit(
                train_data,
                valid_data,
                verbose=verbose,
                saved=saved,
                show_progress=show_progress,
                callback_fn=after_epoch,
            )
        except _OutOfTime:
            self.stopped_by = "time budget"
            self.logger.info(f"time budget of {self.max_train_seconds}s reached")
            return self.best_valid_score, self.best_valid_result
        self.stopped_by = "epochs" if len(self.records) >= self.epochs else "early stopping"
        return out

    def _valid_epoch(self, valid_data, show_progress=False):
        start = time.perf_counter()
        res = self.evaluate_both(valid_data, load_best_model=False, show_progress=show_progress)
        end = time.perf_counter()
        self._eval_seconds += end - start
        self.records.append(
            {
                "epoch": len(self.records),
                "seconds": end - self._t0,
                "train_seconds": end - self._t0 - self._eval_seconds,
                "valid": {p: res[p] for p in PROTOCOLS},
                "n_valid": res["n"],
            }
        )
        chosen = res[self.protocol]
        return chosen["ndcg@10"], {f"ndcg@{K}": chosen["ndcg@10"], f"recall@{K}": chosen["recall@10"]}


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inter", type=Path, required=True, help="user<TAB>item<TAB>timestamp TSV")
    p.add_argument("--out", type=Path, required=True, help="result JSON path")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--max-seq-len", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stopping-step", type=int, default=10)
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="masked",
        help="metric that drives early stopping and the top-level numbers "
        "(masked: history masked, pessimistic ties, as in lightning-rec; "
        "native: RecBole's own full-sort evaluation)",
    )
    p.add_argument(
        "--max-train-seconds",
        type=float,
        default=None,
        help="stop after the first epoch that ends past this many seconds of training "
        "(the best checkpoint so far is tested); default: no limit",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--gpu", action="store_true", help="use a GPU if there is one")
    p.add_argument("--train-batch-size", type=int, default=None, help="default: RecBole's 2048")
    p.add_argument("--learning-rate", type=float, default=None, help="default: RecBole's 0.001")
    p.add_argument("--dropout", type=float, default=None, help="hidden and attention dropout; default: RecBole's 0.5")
    p.add_argument("--quiet", action="store_true", help="RecBole logs warnings only")
    a = p.parse_args(argv)
    for name in ("epochs", "max_seq_len", "stopping_step"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    inter = args.inter.resolve()
    out = args.out.resolve()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        df = read_inter_tsv(inter)
    except BadInput as exc:
        print(f"recbole_sasrec: {exc}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="recbole-sasrec-") as tmp:
        tmp = Path(tmp)
        write_atomic(df, tmp / "data")
        # RecBole writes log/ and log_tensorboard/ under the working directory.
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            result = run(args, df, tmp)
        finally:
            os.chdir(cwd)

    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    part.write_text(json.dumps(result, indent=1) + "\n")
    part.replace(out)
    print(
        f"recbole_sasrec: best valid NDCG@10 {result['best_valid_ndcg@10']:.4f} at epoch "
        f"{result['best_epoch']}, test NDCG@10 {result['test']['ndcg@10']:.4f} "
        f"Recall@10 {result['test']['recall@10']:.4f}, {result['epochs_run']} epochs, "
        f"{result['train_seconds']:.1f}s ({result['protocol']}) -> {out}",
        file=sys.stderr,
    )
    return 0


def run(args, df: pd.DataFrame, tmp: Path) -> dict:
    config_dict = {
        "data_path": str(tmp / "data"),
        "checkpoint_dir": str(tmp / "saved"),
        "use_gpu": bool(args.gpu and torch.cuda.is_available()),
        "seed": args.seed,
        "reproducibility": True,
        "state": "WARNING" if args.quiet else "INFO",
        "show_progress": False,
        "log_wandb": False,
        "worker": 0,
        # data: the TSV as it is, no filtering of any kind
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "rm_dup_inter": None,
        "val_interval": None,
        "filter_inter_by_user_or_item": False,
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "normalize_all": False,
        "MAX_ITEM_LIST_LENGTH": args.max_seq_len,
        # split and evaluation
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "group_by": "user",
            "order": "TO",
            "mode": "full",
        },
        "metrics": ["Recall", "NDCG"],
        "topk": [K],
        "valid_metric": f"NDCG@{K}",
        "valid_metric_bigger": True,
        "eval_step": 1,
        # training: RecBole's SASRec defaults, CE over all items
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "loss_type": "CE",
        "train_neg_sample_args": None,
    }
    if args.train_batch_size:
        config_dict["train_batch_size"] = args.train_batch_size
    if args.learning_rate:
        config_dict["learning_rate"] = args.learning_rate
    if args.dropout is not None:
        config_dict["hidden_dropout_prob"] = config_dict["attn_dropout_prob"] = args.dropout

    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config also parses sys.argv
    try:
        config = Config(model="SASRec", dataset=DATASET, config_dict=config_dict)
    finally:
        sys.argv = argv
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)

    t = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    prep_seconds = time.perf_counter() - t
    hist_items, hist_stamps = history_table(df, dataset)

    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = TimedTrainer(config, model, hist_items, hist_stamps, args.protocol, args.max_train_seconds)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=not args.quiet)
    train_seconds = time.perf_counter() - trainer._t0

    test = trainer.evaluate_both(test_data, load_best_model=True)
    recs = trainer.records
    if not recs:
        raise RuntimeError("RecBole ran no validation epoch")

    by_protocol = {}
    best_i = max(range(len(recs)), key=lambda i: (recs[i]["valid"][args.protocol]["ndcg@10"], i))
    # RecBole keeps the LAST epoch among equal best scores (value >= best), as max(.., i) does.
    for p in PROTOCOLS:
        curve = [[r["seconds"], r["valid"][p]["ndcg@10"]] for r in recs]
        by_protocol[p] = {
            "valid_curve": curve,
            "valid_ndcg@10_at_best_epoch": recs[best_i]["valid"][p]["ndcg@10"],
            "max_valid_ndcg@10": max(c[1] for c in curve),
            "test": test[p],
        }

    keys = [
        "n_layers",
        "n_heads",
        "hidden_size",
        "inner_size",
        "hidden_dropout_prob",
        "attn_dropout_prob",
        "hidden_act",
        "layer_norm_eps",
        "initializer_range",
        "loss_type",
        "learner",
        "learning_rate",
        "weight_decay",
        "train_batch_size",
        "eval_batch_size",
        "epochs",
        "stopping_step",
        "MAX_ITEM_LIST_LENGTH",
        "eval_args",
        "metrics",
        "topk",
        "valid_metric",
        "seed",
        "train_neg_sample_args",
        "user_inter_num_interval",
        "item_inter_num_interval",
    ]
    cfg = {k: config[k] for k in keys}
    cfg.update(
        {
            "model": "SASRec",
            "device": str(config["device"]),
            "torch_threads": torch.get_num_threads(),
            "recbole_version": recbole.__version__,
            "torch_version": torch.__version__,
            "protocol": args.protocol,
            "max_train_seconds": args.max_train_seconds,
            "inter": str(args.inter.resolve()),
        }
    )
    return {
        "valid_curve": by_protocol[args.protocol]["valid_curve"],
        "best_valid_ndcg@10": recs[best_i]["valid"][args.protocol]["ndcg@10"],
        "best_epoch": recs[best_i]["epoch"],
        "train_seconds": train_seconds,
        "test": test[args.protocol],
        "epochs_run": len(recs),
        "stopped_by": trainer.stopped_by,
        "config": json.loads(json.dumps(cfg, default=str)),
        "protocol": args.protocol,
        "by_protocol": by_protocol,
        "epochs": recs,
        "data": {
            "users": int(df["user"].nunique()),
            "items": int(df["item"].nunique()),
            "interactions": int(len(df)),
            "train_targets": len(train_data._dataset),
            "valid_users": recs[0]["n_valid"],
            "test_users": test["n"],
        },
        "prep_seconds": prep_seconds,
    }


if __name__ == "__main__":
    sys.exit(main())
