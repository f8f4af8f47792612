"""`lightning-rec serve` on loopback: a model trained through the real CLI and Trainer, the service
started from the same YAML and checkpoint in a thread, real HTTP requests good and bad."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from test_cli import write_config

from lightning_rec.cli import main
from lightning_rec.recommend import load_trained
from lightning_rec.serving.app import server
from lightning_rec.serving.service import RecommendationService

pytestmark = pytest.mark.usefixtures("one_thread")
MAX_HISTORY = 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory, chain_csv):
    out = tmp_path_factory.mktemp("serve")
    config = write_config(out / "recipe.yaml", chain_csv, out / "run", epochs=10)  # not where fit saves its config
    main(["fit", "-c", config, "--trainer.logger", "false"])
    return config, str(out / "run" / "checkpoints" / "best.ckpt")


@pytest.fixture(scope="module")
def service(trained):
    """The base URL of a running service (any free port) and its uvicorn server; waits until ready.
    Batches wait 100 ms for more requests, so requests sent together are scored together."""
    config, checkpoint = trained
    args = ["-c", config, "--ckpt_path", checkpoint, "--port", "0", "--max_history", str(MAX_HISTORY)]
    uvicorn_server = server([*args, "--batch_wait_ms", "100", "--top_k", "5"])
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uvicorn_server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = uvicorn_server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    while get(url, "/ready")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield url
    uvicorn_server.should_exit = True
    thread.join(10)


def get(url: str, path: str) -> tuple[int, dict]:
    return request(urllib.request.Request(url + path))


def post(url: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request(urllib.request.Request(url + "/recommend", data=data, headers={"Content-Type": "application/json"}))


def request(req: urllib.request.Request) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health_ready_and_stats(service):
    assert get(service, "/health") == (200, {"status": "ok"})
    status, ready = get(service, "/ready")
    assert status == 200 and ready == {"ready": True, "items": 40, "users": 80}
    assert get(service, "/stats")[1]["forward_passes"] >= 1  # the warm-up pass


def test_a_known_user_gets_top_k_titles_outside_their_history(service, chain_csv):
    events = pd.read_csv(chain_csv, dtype={"item": str})
    for user in ["u3", "u17"]:
        status, answer = post(service, {"user": user, "k": 8})
        assert status == 200 and answer["user"] == user
        recs = answer["recommendations"]
        assert len(recs) == 8 and all(r["title"] == f"Item {r['item']}" for r in recs)
        assert not {r["item"] for r in recs} & set(events.loc[events.user == user, "item"])
        assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
    assert len(post(service, {"user": "u3"})[1]["recommendations"]) == 5  # --top_k when the request gives none


def test_a_posted_history_gets_the_next_items_of_the_learned_chain(service):
    """On the chain data the item after ... i - 1, i is i + 1; ids may be posted as strings or numbers."""
    tops = [post(service, {"items": [i, str(i + 1)], "k": 1})[1]["recommendations"][0]["item"] for i in range(1, 30)]
    assert sum(int(top) == i + 2 for i, top in zip(range(1, 30), tops)) > 0.8 * len(tops)


BAD = {
    "not_json": (b'{"items": [1, 2', 400, "Invalid JSON"),
    "empty_body": (b"", 400, "Invalid JSON"),
    "not_an_object": ([1, 2], 422, "body: Input should be an object"),
    "unknown_user": ({"user": "stranger"}, 404, "unknown user id 'stranger'"),
    "unknown_items": ({"items": [1, 999, "x"]}, 422, "unknown item ids [999, 'x']"),
    "empty_history": ({"items": []}, 422, "'items' is empty"),
    "oversized_history": ({"items": [1] * (MAX_HISTORY + 1)}, 422, f"at most {MAX_HISTORY} are served"),
    "both": ({"user": "u3", "items": [1]}, 422, "give exactly one of 'user'"),
    "neither": ({"k": 3}, 422, "give exactly one of 'user'"),
    "k_too_large": ({"items": [1], "k": 41}, 422, "'k' must be between 1 and 40, got 41"),
    "k_zero": ({"items": [1], "k": 0}, 422, "'k' must be between 1 and 40"),
    "k_string": ({"items": [1], "k": "3"}, 422, "k: Input should be a valid integer"),
    "item_float": ({"items": [1.5]}, 422, "items.0"),
    "items_not_a_list": ({"items": 3}, 422, "items: Input should be a valid array"),
    "extra_field": ({"items": [1], "history": [2]}, 422, "history: Extra inputs are not permitted"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_requests_are_4xx_naming_what_is_wrong(service, case):
    body, code, message = BAD[case]
    status, answer = post(service, body)
    assert status == code and message in answer["detail"]


def test_concurrent_requests_are_scored_together_with_the_answers_of_single_requests(service):
    """Histories of different lengths in one batch (left-padded together) get what each gets alone."""
    bodies = [{"items": list(range(1, 2 + i % 7)), "k": 3 + i % 4} for i in range(16)] + [{"user": "u5"}]
    alone = [post(service, body) for body in bodies]
    before = get(service, "/stats")[1]
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda body: post(service, body), bodies))
    after = get(service, "/stats")[1]
    assert after["queries"] - before["queries"] == len(bodies)
    assert after["forward_passes"] - before["forward_passes"] < len(bodies) / 2
    for (status, one), (status_together, batched) in zip(alone, together):
        assert status == status_together == 200
        assert [r["item"] for r in one["recommendations"]] == [r["item"] for r in batched["recommendations"]]
        assert [r["score"] for r in one["recommendations"]] == pytest.approx(
            [r["score"] for r in batched["recommendations"]], abs=1e-5
        )


def test_serve_with_a_missing_checkpoint_is_one_line(trained, tmp_path, capsys):
    config, _ = trained
    with pytest.raises(SystemExit):
        main(["serve", "-c", config, "--ckpt_path", str(tmp_path / "none.ckpt")])
    assert capsys.readouterr().err.strip() == f"lightning-rec: error: {tmp_path / 'none.ckpt'}: checkpoint not found"


def test_the_service_ranks_as_the_model_scores_with_its_item_table_encoded_once(trained):
    config, checkpoint = trained
    data, model = load_trained(checkpoint, ["-c", config])
    service = RecommendationService(model, data)
    query = service.query(items=[3, 4, 5], k=6)
    scores, items = model.score(query.history[None], query.history[None]).topk(6)
    answer = service.top_k([query])[0]
    assert [r["item"] for r in answer] == [data.data.item_ids[i - 1] for i in items[0].tolist()]
    assert [r["score"] for r in answer] == pytest.approx(scores[0].tolist(), abs=1e-5)


def test_the_service_with_a_faiss_index_probing_every_list_answers_as_the_exact_search(trained):
    config, checkpoint = trained
    data, model = load_trained(checkpoint, ["-c", config])
    exact, ann = RecommendationService(model, data), RecommendationService(model, data, ann_probes=1000)
    queries = [exact.query(items=[i, i + 1], k=5) for i in range(1, 30)] + [exact.query(user="u7", k=5)]
    assert [[r["item"] for r in row] for row in ann.top_k(queries)] == [
        [r["item"] for r in row] for row in exact.top_k(queries)
    ]
