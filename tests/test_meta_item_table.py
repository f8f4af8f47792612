"""The inner loop computes the item table once per batch of tasks (once per meta-gradient, once per
evaluation curve) when it does not adapt the item encoder. With a hybrid item encoder (ID + text
vectors through the whitening adaptor, the expensive case) that must change nothing but the time:
the same adapted parameters, scores and meta-gradient as computing the table in every call, and as
plain autograd on a deep copy, with the gradient reaching the item encoder's own parameters."""

from __future__ import annotations

import pytest
import torch
from test_meta import manual_adapt, random_tasks

from lightning_rec.data import ItemCatalog
from lightning_rec.encoders import TransformerEncoder
from lightning_rec.encoders.embedding_cache import write_embeddings
from lightning_rec.encoders.text_item import HybridItemEncoder
from lightning_rec.meta import FOMAML, AdaptivePolicy, InnerLoop, Reptile, UserHead
from lightning_rec.stages import SequentialRecommender
from lightning_rec.stages.meta_training import MetaPolicyOptimizer, _ndcg

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_ITEMS = 12


@pytest.fixture
def hybrid_recommender(tmp_path) -> SequentialRecommender:
    """A built hybrid SASRec with random weights; items 3 and 7 have no training event (text only)."""
    torch.manual_seed(0)
    cache = tmp_path / "text.safetensors"
    write_embeddings(cache, torch.cat([torch.zeros(1, 6), torch.randn(NUM_ITEMS, 6)]), {})
    model = SequentialRecommender(
        HybridItemEncoder(str(cache), dim=8, num_experts=2, dropout=0.0, init_std=0.3),
        TransformerEncoder(8, 2, 2, max_len=12, dropout=0.0),
    )
    popularity = torch.arange(NUM_ITEMS + 1, dtype=torch.float)
    popularity[[3, 7]] = 0
    model.build(ItemCatalog(NUM_ITEMS, None, popularity))
    with torch.no_grad():  # a trained-looking gate, so every expert and the gate get gradients
        model.item_encoder.adaptor.gate.weight.normal_()
    return model


def policy_with_trained_head(recommender: SequentialRecommender) -> AdaptivePolicy:
    policy = AdaptivePolicy(recommender, UserHead())
    with torch.no_grad():  # away from the identity, so the head's gradient is not a special case
        policy.head.linear.weight.normal_(std=0.1)
    return policy


def count_item_tables(policy: AdaptivePolicy) -> list[int]:
    calls = [0]
    policy.recommender.item_encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("adapt", ["head", "top_layers"])
def test_fomaml_with_the_table_computed_once_matches_plain_autograd_per_task(hybrid_recommender, adapt):
    policy = policy_with_trained_head(hybrid_recommender)
    tasks = random_tasks(num_items=NUM_ITEMS)
    loop = InnerLoop(policy, policy.adapted_names(adapt), steps=2, lr=0.5)
    calls = count_item_tables(policy)
    gradient, loss = FOMAML().meta_gradient(loop, tasks)
    assert calls[0] == 1  # one table, one backward through it, for the whole batch of tasks
    expected = {n: torch.zeros_like(p) for n, p in policy.named_parameters()}
    losses = []
    for t in range(len(tasks)):
        adapted = manual_adapt(policy, loop.names, tasks, t, 2, 0.5)
        query_loss = adapted(tasks.query_input[t], tasks.query_target[t])
        losses.append(query_loss)
        for (n, _), g in zip(adapted.named_parameters(), torch.autograd.grad(query_loss, list(adapted.parameters()))):
            expected[n] += g / len(tasks)
    assert set(gradient) == set(expected)
    for n in expected:
        torch.testing.assert_close(gradient[n], expected[n], atol=1e-5, rtol=1e-4, msg=n)
    for n in (
        "adaptor.weight",
        "adaptor.bias",
        "adaptor.gate.weight",
        "id_embedding.weight",
    ):  # the table is not a constant
        assert gradient[f"recommender.item_encoder.{n}"].abs().sum() > 0, n
    torch.testing.assert_close(loss, torch.stack(losses).mean())


def test_the_cached_table_gives_the_same_meta_gradients_as_one_table_per_call(hybrid_recommender, monkeypatch):
    """`item_table() -> None` is the per-call path (the one `adapt: all` takes): same numbers."""
    policy = policy_with_trained_head(hybrid_recommender)
    tasks = random_tasks(num_items=NUM_ITEMS)
    for algorithm in (FOMAML(), Reptile()):
        loop = InnerLoop(policy, policy.adapted_names("head"), steps=3, lr=0.5)
        cached, cached_loss = algorithm.meta_gradient(loop, tasks)
        monkeypatch.setattr(loop, "item_table", lambda: None)
        per_call, per_call_loss = algorithm.meta_gradient(loop, tasks)
        assert set(cached) == set(per_call)
        for n in cached:
            torch.testing.assert_close(cached[n], per_call[n], atol=1e-6, rtol=1e-5, msg=n)
        torch.testing.assert_close(cached_loss, per_call_loss)


def test_an_evaluation_curve_computes_the_table_once_and_scores_as_one_table_per_call(hybrid_recommender):
    model = MetaPolicyOptimizer(
        recommender=hybrid_recommender, head=UserHead(), adapt="head", inner_steps=2, inner_lr=0.5
    ).eval()
    with torch.no_grad():
        model.policy.head.linear.weight.normal_(std=0.1)
    tasks, loop = random_tasks(num_items=NUM_ITEMS), model.inner
    calls = count_item_tables(model.policy)
    curve = model._curve(loop, tasks, steps=4)
    assert calls[0] == 1 and len(curve) == 5
    with torch.no_grad():
        items = loop.item_table()
    per_call = loop.fast_weights(tasks, 4)
    for point, cached, fast in zip(curve, loop.fast_weights(tasks, 4, items=items), per_call, strict=True):
        torch.testing.assert_close(cached["head.linear.weight"], fast["head.linear.weight"])
        scores = loop.query_scores(fast, tasks)
        torch.testing.assert_close(loop.query_scores(cached, tasks, items), scores)
        torch.testing.assert_close(point["ndcg"], _ndcg(scores.flatten(0, 1), tasks.query_target.flatten(), 10))
    assert not torch.equal(curve[0]["ndcg"], curve[-1]["ndcg"])  # adaptation changed the rankings
