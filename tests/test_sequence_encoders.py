"""GRU4Rec, BERT4Rec (bidirectional transformer + masked-item objective) and the PLM over histories."""

from __future__ import annotations

import lightning as L
import pandas as pd
import pytest
import torch
from tiny_plm import save_tiny_bert
from trainers import quiet_trainer

from lightning_rec.data import ItemCatalog, SequenceDataModule
from lightning_rec.encoders import IDItemEncoder, TransformerEncoder
from lightning_rec.encoders.gru import GRUEncoder
from lightning_rec.encoders.plm_sequence import PLMHistoryEncoder
from lightning_rec.encoders.sequence import IncrementalStates
from lightning_rec.encoders.transformer import CachedStates
from lightning_rec.objectives.cloze import MaskedItemObjective
from lightning_rec.stages import SequentialRecommender


def fit_and_test(model, source, epochs: int = 10) -> dict:
    dm = SequenceDataModule(source, max_len=8, batch_size=32, cache_dir=None)
    trainer = quiet_trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(model, dm)
    return trainer.test(model, dm, verbose=False)[0]


# -- the state after the last position --------------------------------------------------------------
@pytest.mark.parametrize(
    "encoder",
    [
        TransformerEncoder(8, 3, 2, max_len=10, dropout=0.0),
        TransformerEncoder(8, 2, 2, max_len=10, dropout=0.0, causal=False),
        GRUEncoder(8, 12, dropout=0.0),
    ],
    ids=["sasrec", "bert4rec", "gru4rec"],
)
def test_the_last_state_is_the_full_encodings_last_position(encoder):
    """What scoring reads: the transformer computes its final block at the last position only."""
    torch.manual_seed(0)
    encoder.eval()
    x = torch.randn(4, 6, 8)
    padding = torch.tensor([[True] * k + [False] * (6 - k) for k in (0, 2, 5, 3)])
    last = encoder.last_state(x, padding)
    assert last.shape == (4, 1, 8)
    torch.testing.assert_close(last, encoder(x, padding)[:, -1:], atol=1e-6, rtol=1e-5)


# -- states of rows that grow in place -------------------------------------------------------------
def grow(encoder, tracker, x, padding, position, appended):
    """Each step's states from `tracker`, appending appended[:, step] (NaN rows: nothing appended)."""
    with torch.no_grad():
        states, seen, positions = None, [], []
        for step in range(appended.shape[1] + 1):
            if states is None:
                states = tracker(encoder, x, padding, position)
            else:
                rows = torch.nonzero(~appended[:, step - 1].isnan().any(-1)).squeeze(1)
                states.append(rows, appended[rows, step - 1])
            seen.append(states.hidden.clone())
            positions.append(states.position.clone())
    return torch.stack(seen, 1), torch.stack(positions, 1)


@pytest.mark.parametrize(
    "encoder, tracker",
    [
        (TransformerEncoder(8, 2, 2, max_len=10, dropout=0.1), CachedStates),
        (TransformerEncoder(8, 2, 2, max_len=10, dropout=0.1), IncrementalStates),
        (GRUEncoder(8, 12, num_layers=2, dropout=0.1), IncrementalStates),
    ],
    ids=["sasrec-cached", "sasrec-recomputed", "gru4rec-recomputed"],
)
def test_states_after_appending_equal_one_pass_over_the_final_rows(encoder, tracker):
    """What the policy acts on during an episode is what its updates recompute in one pass."""
    torch.manual_seed(0)
    encoder.eval()
    x = torch.randn(3, 9, 8)
    padding = torch.tensor(
        [[True] * 3 + [False] * 3 + [True] * 3, [False] * 6 + [True] * 3, [True] * 5 + [False] + [True] * 3]
    )
    appended = torch.randn(3, 3, 8)
    appended[0, 1] = appended[1] = float("nan")  # row 0 skips a step, row 1 never grows
    seen, positions = grow(encoder, tracker, x, padding, torch.full((3,), 5), appended)
    assert positions.tolist() == [[5, 6, 6, 7], [5, 5, 5, 5], [5, 6, 7, 8]]
    final = x.clone()
    final[0, 6:8], final[2, 6:9] = appended[0, [0, 2]], appended[2]
    grown = padding.clone()
    grown[0, 6:8] = grown[2, 6:9] = False
    torch.testing.assert_close(seen, encoder.states_at(final, grown, positions), atol=1e-5, rtol=1e-5)


def test_a_gru_state_after_appending_is_its_state_after_the_history_so_far():
    """Positions do not matter to a GRU: the empty slots after a row's newest input change nothing."""
    torch.manual_seed(0)
    gru = GRUEncoder(8, 12, dropout=0.0).eval()
    x, appended = torch.randn(2, 4, 8), torch.randn(2, 2, 8)
    padding = torch.tensor([[True, True, False, False], [False] * 4])
    rows = torch.cat([x, torch.zeros(2, 2, 8)], 1)
    seen, _ = grow(
        gru,
        IncrementalStates,
        rows,
        torch.cat([padding, torch.ones(2, 2, dtype=torch.bool)], 1),
        torch.full((2,), 3),
        appended,
    )
    for step in range(3):
        history = torch.cat([x, appended[:, :step]], 1)
        expected = gru.last_state(history, torch.cat([padding, torch.zeros(2, step, dtype=torch.bool)], 1))
        torch.testing.assert_close(seen[:, step], expected[:, 0], atol=1e-6, rtol=1e-5)


def test_the_transformer_caches_keys_and_values_others_recompute_and_bidirectional_encoders_have_none():
    x, padding, position = torch.zeros(1, 3, 8), torch.zeros(1, 3, dtype=torch.bool), torch.zeros(1, dtype=torch.long)
    assert type(TransformerEncoder(8, 1, 2, max_len=10).incremental(x, padding, position)) is CachedStates
    assert type(GRUEncoder(8, 12).incremental(x, padding, position)) is IncrementalStates
    with pytest.raises(ValueError, match="causal"):
        TransformerEncoder(8, 1, 2, max_len=10, causal=False).incremental(x, padding, position)


def test_encoders_name_their_top_layers_for_the_meta_learner():
    encoder = TransformerEncoder(8, 3, 2, max_len=10)
    assert encoder.top_layer_prefixes(2) == ["blocks.1.", "blocks.2.", "norm."]
    assert all(any(n.startswith(p) for n, _ in encoder.named_parameters()) for p in encoder.top_layer_prefixes(3))
    with pytest.raises(ValueError, match="3 blocks"):
        encoder.top_layer_prefixes(4)
    with pytest.raises(ValueError, match="GRUEncoder does not name"):
        GRUEncoder(8, 12).top_layer_prefixes(1)


# -- GRU4Rec ----------------------------------------------------------------------------------------
def test_gru_ignores_padding_and_the_future():
    torch.manual_seed(0)
    gru = GRUEncoder(8, 12, num_layers=2, dropout=0.0).eval()
    x = torch.randn(1, 3, 8)
    padded = torch.cat([torch.zeros(1, 4, 8), x], 1)
    short = gru(x, torch.zeros(1, 3, dtype=torch.bool))
    long = gru(padded, torch.tensor([[True] * 4 + [False] * 3]))
    torch.testing.assert_close(long[:, 4:], short, atol=1e-6, rtol=1e-5)
    assert torch.all(long[:, :4] == 0)
    around = gru(torch.cat([padded, torch.zeros(1, 2, 8)], 1), torch.tensor([[True] * 4 + [False] * 3 + [True] * 2]))
    torch.testing.assert_close(around[:, 4:7], short, atol=1e-6, rtol=1e-5)  # and padding after the events
    changed = x.clone()
    changed[0, 2] = torch.randn(8)
    after = gru(changed, torch.zeros(1, 3, dtype=torch.bool))
    torch.testing.assert_close(after[:, :2], short[:, :2])
    assert not torch.allclose(after[:, 2], short[:, 2])


def test_gru4rec_learns_the_item_chain(chain_source):
    L.seed_everything(0)
    model = SequentialRecommender(
        IDItemEncoder(32, init_std=0.1), GRUEncoder(32, 32, dropout=0.0), lr=2e-2, warmup_steps=5
    )
    assert fit_and_test(model, chain_source, epochs=6)["test/ndcg@10"] > 0.6


# -- BERT4Rec ---------------------------------------------------------------------------------------
def test_masked_item_objective_masks_real_items_only_and_targets_exactly_the_masked():
    torch.manual_seed(0)
    window = torch.randint(1, 50, (400, 11))
    window[:, :3] = 0  # left padding
    window[0, :-1] = 0  # a row with a single item
    input, target = MaskedItemObjective(mask_prob=0.3).prepare(window[:, :-1], window[:, 1:])
    sequence = window[:, 1:]
    masked = target != 0
    assert torch.equal(input, sequence.masked_fill(masked, 0))  # masked positions become the mask (0) ...
    assert torch.equal(target[masked], sequence[masked])  # ... and are the only targets
    assert not masked[sequence == 0].any() and masked.any(1).all()  # never padding; every row has one
    assert abs(masked[:, 3:].float().mean().item() - 0.3) < 0.03
    assert masked[0, -1]


def test_masked_item_inference_appends_the_mask_position():
    input = torch.tensor([[0, 4, 5, 6]])
    assert MaskedItemObjective().prepare_inference(input).tolist() == [[4, 5, 6, 0]]


def test_bert4rec_learns_the_item_chain(chain_source):
    L.seed_everything(0)
    model = SequentialRecommender(
        IDItemEncoder(32),
        TransformerEncoder(32, 2, 2, max_len=8, dropout=0.0, causal=False),
        MaskedItemObjective(0.5),
        lr=1e-2,
        warmup_steps=5,
    )
    assert fit_and_test(model, chain_source, epochs=10)["test/ndcg@10"] > 0.5


# -- PLM over histories -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def history_encoder(bert: str, **kwargs) -> PLMHistoryEncoder:
    encoder = PLMHistoryEncoder(8, bert, template="{title}", dropout=0.0, **kwargs)
    info = pd.DataFrame({"item": [1, 2, 3], "title": ["ab", "cde", "f"]})
    encoder.build(ItemCatalog(3, info, torch.zeros(4)))
    return encoder.eval()


def test_history_text_is_the_recent_items_in_order_and_drops_the_oldest_tokens(bert):
    encoder = history_encoder(bert, max_items=3, item_max_tokens=4, max_length=7)
    tok = encoder.language_model.tokenizer
    cls, sep = tok.cls_token_id, tok.sep_token_id
    a, b, c, d, e, f = tok.convert_tokens_to_ids(["a", "##b", "c", "##d", "##e", "f"])
    ids, mask = encoder.render(torch.tensor([[0, 0, 1, 3], [2, 1, 3, 2], [0, 0, 0, 0]]))
    # row 0: "ab", "f"; row 1: the last 3 items "ab f cde" are 9 tokens, only the newest 6 fit after [CLS]
    assert ids[0, mask[0].bool()].tolist() == [cls, a, b, sep, f, sep]
    assert ids[1, mask[1].bool()].tolist() == [cls, f, sep, c, d, e, sep]
    assert ids[2, mask[2].bool()].tolist() == [cls]
    padded = encoder(torch.tensor([[0, 0, 1, 3]]), None)
    torch.testing.assert_close(encoder(torch.tensor([[1, 3]]), None), padded)
    assert padded.shape == (1, 1, 8)


def test_plm_history_recommender_trains_the_language_model_on_the_last_target(bert):
    torch.manual_seed(0)
    encoder = PLMHistoryEncoder(8, bert, template="{title}", max_items=2, dropout=0.0)
    model = SequentialRecommender(IDItemEncoder(8), encoder, lr=1e-2)
    info = pd.DataFrame({"item": [1, 2, 3], "title": ["ab", "cde", "f"]})
    model.build(ItemCatalog(3, info, torch.zeros(4)))
    batch = {"input": torch.tensor([[0, 1, 2], [3, 1, 2]]), "target": torch.tensor([[1, 2, 3], [1, 2, 1]])}
    model.log = lambda *args, **kwargs: None
    loss = model.training_step(batch, 0)
    items = model.item_encoder()
    expected = torch.nn.functional.cross_entropy(
        (encoder(batch["input"], None)[:, 0] @ items.T)[:, 1:], torch.tensor([3, 1]) - 1
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert encoder.language_model.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
