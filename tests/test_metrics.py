"""Ranking metrics: pessimistic ranks, agreement with references, edge cases, DDP reduction."""

import math
import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMRR, RetrievalNormalizedDCG, RetrievalRecall

from lightning_rec.metrics import (
    CoverageAtK,
    HitRateAtK,
    MRRAtK,
    NDCGAtK,
    RecallAtK,
    ndcg_of_ranks,
    pessimistic_ranks,
    ranking_metrics,
)

INF = float("inf")
NAN = float("nan")


def random_scores(users: int, items: int, seed: int, ties: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores [users, items+1] with padding column 0 at -inf and masked history at -inf; targets in 1..items.

    With ``ties`` the scores are small integers (many ties) and a few are NaN.
    """
    g = torch.Generator().manual_seed(seed)
    if ties:
        scores = torch.randint(0, 5, (users, items + 1), generator=g).float()
        scores[torch.rand(users, items + 1, generator=g) < 0.05] = NAN
    else:
        scores = torch.randn(users, items + 1, generator=g)
    targets = torch.randint(1, items + 1, (users,), generator=g)
    if ties:
        history = torch.rand(users, items + 1, generator=g) < 0.2
        history[torch.arange(users), targets] = False
        scores[history] = -INF
    scores[:, 0] = -INF
    return scores, targets


def reference_ranks(scores: torch.Tensor, targets: torch.Tensor) -> list[int]:
    """Sort items 1..N by score, NaN as -inf, placing the target after every item it ties with."""
    ranks = []
    for row, target in zip(scores.tolist(), targets.tolist()):
        value = {j: (-INF if math.isnan(row[j]) else row[j]) for j in range(1, len(row))}
        order = sorted(value, key=lambda j: (-value[j], j == target))
        ranks.append(order.index(target))
    return ranks


REFERENCE_GAINS = {
    "recall": lambda r: 1.0,
    "hr": lambda r: 1.0,
    "ndcg": lambda r: 1.0 / math.log2(r + 2),
    "mrr": lambda r: 1.0 / (r + 1),
}


def reference_value(name: str, ranks: list[int], k: int) -> float:
    return sum(REFERENCE_GAINS[name](r) if r < k else 0.0 for r in ranks) / len(ranks)


def test_pessimistic_ranks_match_sort_reference_with_ties_nan_and_masks():
    scores, targets = random_scores(users=40, items=30, seed=0, ties=True)
    assert pessimistic_ranks(scores, targets).tolist() == reference_ranks(scores, targets)


@pytest.mark.parametrize("k", [1, 3, 10, 25])
def test_collection_matches_reference_on_tied_scores(k):
    scores, targets = random_scores(users=64, items=30, seed=k, ties=True)
    ranks = reference_ranks(scores, targets)
    metrics = ranking_metrics(ks=(k,))
    # Two updates: the state must accumulate users, not average batch means.
    metrics.update(scores[:50], targets[:50])
    metrics.update(scores[50:], targets[50:])
    values = metrics.compute()
    for name in REFERENCE_GAINS:
        assert values[f"{name}@{k}"].item() == pytest.approx(reference_value(name, ranks, k), abs=1e-6), name


@pytest.mark.parametrize("k", [1, 5, 20])
def test_per_row_ndcg_averages_to_the_metric_and_the_reference(k):
    scores, targets = random_scores(users=64, items=30, seed=k, ties=True)
    rows = ndcg_of_ranks(pessimistic_ranks(scores, targets), k)
    metric = NDCGAtK(k)
    metric.update(scores, targets)
    assert rows.shape == (64,) and rows.mean().item() == pytest.approx(metric.compute().item(), abs=1e-6)
    assert rows.mean().item() == pytest.approx(reference_value("ndcg", reference_ranks(scores, targets), k), abs=1e-6)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_single_metrics_match_torchmetrics_retrieval_without_ties(k):
    users, items = 25, 40
    scores, targets = random_scores(users=users, items=items, seed=100 + k, ties=False)
    preds = scores[:, 1:].flatten()
    relevant = torch.zeros(users, items, dtype=torch.bool)
    relevant[torch.arange(users), targets - 1] = True
    indexes = torch.arange(users).repeat_interleave(items)
    pairs = [
        (RecallAtK, RetrievalRecall),
        (NDCGAtK, RetrievalNormalizedDCG),
        (MRRAtK, RetrievalMRR),
        (HitRateAtK, RetrievalHitRate),
    ]
    for ours_cls, theirs_cls in pairs:
        ours, theirs = ours_cls(k=k), theirs_cls(top_k=k)
        ours.update(scores, targets)
        theirs.update(preds, relevant.flatten(), indexes=indexes)
        assert ours.compute().item() == pytest.approx(theirs.compute().item(), abs=1e-6), ours_cls.__name__


@pytest.mark.parametrize("fill", [0.5, NAN], ids=["constant", "nan"])
def test_degenerate_models_never_hit(fill):
    users, items = 8, 50
    scores = torch.full((users, items + 1), fill)
    scores[:, 0] = -INF
    targets = torch.arange(1, users + 1)
    assert pessimistic_ranks(scores, targets).tolist() == [items - 1] * users
    metrics = ranking_metrics(ks=(10,), num_items=items)
    metrics.update(scores, targets)
    values = metrics.compute()
    assert values["recall@10"] == 0 and values["ndcg@10"] == 0 and values["mrr@10"] == 0
    if math.isnan(fill):
        assert values["coverage@10"] == 0  # NaN items are never recommended


def test_masked_history_never_ranks_above_a_finite_target():
    items = 20
    scores = torch.full((2, items + 1), -INF)
    scores[0, 5] = -3.0  # a poor but finite target; everything else is masked
    scores[1, 7] = 1.0
    scores[1, 8] = 2.0  # one real competitor, the rest masked
    targets = torch.tensor([5, 7])
    assert pessimistic_ranks(scores, targets).tolist() == [0, 1]
    recall = RecallAtK(k=1)
    recall.update(scores, targets)
    assert recall.compute().item() == pytest.approx(0.5)


def test_coverage_on_hand_made_example():
    items = 6
    scores = torch.tensor(
        [
            [-INF, 5.0, 4.0, 1.0, 0.0, 0.0, 0.0],  # top-2: items 1, 2
            [-INF, 5.0, -INF, 3.0, 0.0, NAN, 0.0],  # top-2: items 1, 3 (NaN item 5 not recommended)
            [-INF, -INF, -INF, -INF, -INF, -INF, 2.0],  # only item 6 is recommendable
        ]
    )
    coverage = CoverageAtK(num_items=items, k=2)
    coverage.update(scores, torch.tensor([1, 1, 6]))
    assert coverage.item_counts.tolist() == [2, 1, 1, 0, 0, 1]
    assert coverage.compute().item() == pytest.approx(4 / 6)


def test_empty_metrics_compute_zero_quietly():
    metrics = ranking_metrics(ks=(5, 10), num_items=7, prefix="val/")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = metrics.compute()
    assert set(values) == {f"val/{m}@{k}" for m in ("recall", "ndcg", "hr", "mrr", "coverage") for k in (5, 10)}
    assert all(v.item() == 0 for v in values.values())


def test_collection_shares_one_state_per_k():
    metrics = ranking_metrics(ks=(10, 20), num_items=30)
    groups = sorted(sorted(g) for g in metrics.compute_groups.values())
    assert ["hr@10", "mrr@10", "ndcg@10", "recall@10"] in groups
    assert ["coverage@10"] in groups and ["coverage@20"] in groups
    scores, targets = random_scores(users=16, items=30, seed=3, ties=True)
    metrics.update(scores, targets)
    metrics.update(scores, targets)
    alone = NDCGAtK(k=20)
    alone.update(scores, targets)
    assert metrics.compute()["ndcg@20"].item() == pytest.approx(alone.compute().item())


@pytest.mark.parametrize(
    ("scores", "targets", "message"),
    [
        (torch.zeros(3), torch.tensor([1]), "shape"),
        (torch.zeros(2, 5), torch.tensor([1, 2, 3]), "targets must have shape"),
        (torch.zeros(2, 5), torch.tensor([0, 2]), "1..4"),
        (torch.zeros(2, 5), torch.tensor([1, 5]), "1..4"),
        (torch.zeros(2, 5), torch.tensor([1.0, 2.0]), "integer"),
    ],
)
def test_bad_inputs_name_the_problem(scores, targets, message):
    with pytest.raises(ValueError, match=message):
        pessimistic_ranks(scores, targets)


def test_coverage_rejects_scores_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"\[B, 8\]"):
        CoverageAtK(num_items=7).update(torch.zeros(2, 5), torch.tensor([1, 2]))


def ddp_scores() -> tuple[torch.Tensor, torch.Tensor]:
    """Untied scores with the target boosted, so recall and coverage land strictly between 0 and 1."""
    scores, targets = random_scores(users=30, items=60, seed=7, ties=False)
    scores[torch.arange(30), targets] += 1.5
    return scores, targets


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        scores, targets = ddp_scores()
        # Uneven halves (18 / 12 users, in two updates on rank 0) so a mean of rank means would be wrong.
        metrics = ranking_metrics(ks=(5, 10), num_items=60)
        if rank == 0:
            metrics.update(scores[:10], targets[:10])
            metrics.update(scores[10:18], targets[10:18])
        else:
            metrics.update(scores[18:], targets[18:])
        values = {name: value.item() for name, value in metrics.compute().items()}
        torch.save(values, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_single_process(tmp_path):
    # fork, not spawn: a spawned child re-imports torchmetrics (which pulls in transformers and scipy),
    # 5-15 s per child on a 2-core machine; the forked child starts with it loaded.
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="fork")
    scores, targets = ddp_scores()
    single = ranking_metrics(ks=(5, 10), num_items=60)
    single.update(scores, targets)
    expected = {name: value.item() for name, value in single.compute().items()}
    assert 0 < expected["recall@10"] < 1 and 0 < expected["coverage@5"] < 1  # a test that can tell sums from means
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got == pytest.approx(expected), rank
