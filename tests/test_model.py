"""The SASRec encoder, scoring protocol, objectives and learning through a real Trainer."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from trainers import quiet_trainer

from lightning_rec.data import ItemCatalog, SequenceDataModule
from lightning_rec.encoders import IDItemEncoder, TransformerEncoder
from lightning_rec.objectives import FullSoftmax, SampledSoftmax
from lightning_rec.scoring import mask_scores
from lightning_rec.stages import SequentialRecommender


def built_model(num_items: int = 30, **kwargs) -> SequentialRecommender:
    torch.manual_seed(0)
    model = SequentialRecommender(IDItemEncoder(16), TransformerEncoder(16, 1, 2, max_len=8, dropout=0.0), **kwargs)
    popularity = torch.arange(num_items + 1, dtype=torch.float)
    model.build(ItemCatalog(num_items, None, popularity))
    return model.eval()


def test_fully_padded_rows_give_no_nan_and_padding_does_not_change_the_last_state():
    model = built_model()
    seq = torch.tensor([[0, 0, 0, 0, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 0]])
    hidden = model.encode(seq)
    assert torch.isfinite(hidden).all()
    shorter = model.encode(torch.tensor([[0, 0, 5, 6, 7, 8]]))
    torch.testing.assert_close(hidden[0, -1], shorter[0, -1], atol=1e-5, rtol=1e-5)


def test_causal_encoder_ignores_the_future_and_bidirectional_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 16)
    padding = torch.zeros(1, 6, dtype=torch.bool)
    changed = x.clone()
    changed[0, 4:] = torch.randn(2, 16)
    causal = TransformerEncoder(16, 2, 2, max_len=6, dropout=0.0).eval()
    torch.testing.assert_close(causal(x, padding)[0, :4], causal(changed, padding)[0, :4])
    bidirectional = TransformerEncoder(16, 2, 2, max_len=6, dropout=0.0, causal=False).eval()
    assert not torch.allclose(bidirectional(x, padding)[0, :4], bidirectional(changed, padding)[0, :4])


def test_scores_mask_history_and_padding_and_empty_rows_fall_back_to_popularity():
    model = built_model()
    input = torch.tensor([[0, 0, 3, 4], [0, 0, 0, 0]])
    history = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]])
    scores = model.score(input, history)
    assert torch.isinf(scores[0, [0, 1, 2, 3, 4]]).all() and torch.isfinite(scores[0, 5:]).all()
    assert scores[1, 1:].argsort(descending=True)[:3].tolist() == [29, 28, 27]  # most popular items 30, 29, 28
    unmasked = built_model(mask_history=False).score(input, history)
    assert torch.isfinite(unmasked[0, 1:]).all()


def test_mask_scores_masks_padding_and_each_rows_history_with_any_leading_dims_and_under_vmap():
    scores = torch.arange(2 * 3 * 6, dtype=torch.float).view(2, 3, 6)
    history = torch.tensor([[[0, 2], [5, 5], [1, 3]], [[0, 0], [4, 1], [2, 2]]])
    masked = mask_scores(scores, history)
    blocked = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, history, True)
    blocked[..., 0] = True
    assert torch.equal(masked.isinf(), blocked) and torch.equal(masked[~blocked], scores[~blocked])
    assert torch.equal(torch.func.vmap(mask_scores)(scores, history), masked)
    assert torch.equal(mask_scores(scores).isinf(), torch.arange(6).expand(2, 3, -1) == 0)


def test_sampled_softmax_drops_negatives_equal_to_the_target():
    items = torch.randn(6, 4)
    hidden = torch.randn(3, 4)
    target = torch.tensor([1, 2, 3])
    torch.manual_seed(1)
    loss = SampledSoftmax(num_negatives=50)(hidden, target, items)
    torch.manual_seed(1)
    negatives = torch.randint(1, 6, (50,))
    logits = torch.cat([(hidden * items[target]).sum(-1, keepdim=True), hidden @ items[negatives].T], 1)
    logits[:, 1:][negatives.unsqueeze(0) == target.unsqueeze(1)] = float("-inf")
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, torch.zeros(3, dtype=torch.long)))


def test_popularity_sampled_softmax_draws_by_training_events_and_corrects_by_log_q():
    items, hidden = torch.randn(6, 4), torch.randn(3, 4)
    target, counts = torch.tensor([1, 2, 5]), torch.tensor([0.0, 5, 1, 0, 2, 2])
    torch.manual_seed(1)
    loss = SampledSoftmax(num_negatives=50, sampling="popularity")(hidden, target, items, counts)
    torch.manual_seed(1)
    q = counts / counts.sum()
    negatives = torch.multinomial(q, 50, replacement=True)
    assert not (negatives == 0).any() and not (negatives == 3).any()  # no events: never a negative
    log_q = (50 * q).log()
    logits = torch.cat(
        [
            (hidden * items[target]).sum(-1, keepdim=True) - log_q[target, None],
            hidden @ items[negatives].T - log_q[negatives],
        ],
        1,
    )
    logits[:, 1:][negatives.unsqueeze(0) == target.unsqueeze(1)] = float("-inf")
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, torch.zeros(3, dtype=torch.long)))


def test_full_softmax_never_predicts_padding():
    items = torch.randn(5, 4)
    items[0] = 100.0  # a huge padding row must not matter
    hidden = torch.ones(2, 4)
    target = torch.tensor([1, 2])
    logits = hidden @ items[1:].T
    expected = torch.nn.functional.cross_entropy(logits, target - 1)
    torch.testing.assert_close(FullSoftmax()(hidden, target, items), expected)


def test_mismatched_dims_are_a_clear_error():
    with pytest.raises(ValueError, match="dim"):
        SequentialRecommender(IDItemEncoder(16), TransformerEncoder(32))


@pytest.mark.parametrize(
    "objective",
    [FullSoftmax(), SampledSoftmax(num_negatives=20), SampledSoftmax(num_negatives=20, sampling="popularity")],
)
def test_training_learns_the_item_chain(chain_source, objective):
    """Next item = last item + 1 on a ring of 40: chance NDCG@10 is about 0.1."""
    L.seed_everything(0)
    dm = SequenceDataModule(chain_source, max_len=8, batch_size=32, cache_dir=None)
    model = SequentialRecommender(
        IDItemEncoder(32), TransformerEncoder(32, 1, 2, max_len=8, dropout=0.1), objective, lr=5e-3, warmup_steps=5
    )
    trainer = quiet_trainer(max_epochs=25)
    trainer.fit(model, dm)
    (result,) = trainer.test(model, dm, verbose=False)
    assert result["test/ndcg@10"] > 0.6 and result["test/recall@10"] > 0.8
    assert 0 < result["test/coverage@10"] <= 1
