"""The HTTP side of `lightning-rec serve`: FastAPI routes over a RecommendationService and a
DynamicBatcher, served by uvicorn. Bad input is a 4xx naming what is wrong, never a 500."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from lightning_rec.data.errors import DataError
from lightning_rec.serving.batcher import DynamicBatcher
from lightning_rec.serving.service import RecommendationService, UnknownUser

Id = StrictStr | StrictInt  # as the data spells it; "1" and 1 are the same id


class RecommendRequest(BaseModel):
    """`{"user": ID}` or `{"items": [ID, ...]}` (original ids, oldest first), optionally `"k"`."""

    model_config = ConfigDict(extra="forbid")
    user: Id | None = None
    items: list[Id] | None = None
    k: StrictInt | None = None


def validation_error(request: Request, error: ValidationError) -> JSONResponse:
    """400 for a body that is not JSON, 422 for JSON of the wrong shape, each naming where."""
    errors = error.errors()
    status = 400 if any(e["type"] == "json_invalid" for e in errors) else 422
    reasons = [f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}" for e in errors]
    return JSONResponse({"detail": "; ".join(reasons)}, status_code=status)


def data_error(request: Request, error: DataError) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=404 if isinstance(error, UnknownUser) else 422)


def create_app(service: RecommendationService, max_batch: int = 64, max_wait_ms: float = 0.0) -> FastAPI:
    """The app. Ready (`/ready` 200) once the batcher runs and one forward pass has warmed the model
    up; `/health` answers as soon as the process serves. `app.state.batcher` counts forward passes."""
    batcher = DynamicBatcher(service.top_k, max_batch, max_wait_ms)
    state = {"ready": False}

    async def warm_up() -> None:
        await batcher.submit(service.query(items=[service.item_ids[0]], k=1))
        state["ready"] = True

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        warming = asyncio.create_task(warm_up())
        yield
        state["ready"] = False
        warming.cancel()
        await batcher.stop()

    app = FastAPI(title="lightning-rec", lifespan=lifespan)
    app.state.batcher = batcher
    app.add_exception_handler(ValidationError, validation_error)
    app.add_exception_handler(DataError, data_error)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if not (state["ready"] and batcher.running):
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True, "items": len(service.item_ids), "users": service.data.data.num_users})

    @app.get("/stats")
    async def stats() -> dict:
        return {"forward_passes": batcher.batches, "queries": batcher.queries}

    @app.post("/recommend")
    async def recommend(request: Request) -> dict:
        """The body is read as JSON whatever its content type says (curl -d sends a form's)."""
        body = RecommendRequest.model_validate_json(await request.body())
        query = service.query(body.user, body.items, body.k)
        return {"user": body.user, "recommendations": await batcher.submit(query)}

    return app


def server(argv: list[str]) -> uvicorn.Server:
    """The uvicorn server of `lightning-rec serve` (not yet running), its model loaded."""
    from lightning_rec.recommend import load_trained

    parser = argparse.ArgumentParser(prog="lightning-rec serve", description=serve_main.__doc__)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--top_k", type=int, default=None, help="k when a request gives none (default: the model's)")
    parser.add_argument("--max_k", type=int, default=100)
    parser.add_argument("--max_history", type=int, default=1000, help="longest posted history served")
    parser.add_argument("--max_batch", type=int, default=64, help="most requests scored in one forward pass")
    parser.add_argument("--batch_wait_ms", type=float, default=0.0, help="wait for more requests after the first")
    parser.add_argument(
        "--ann_probes", type=int, default=0, help="0: exact top-k; >0: a faiss index probing that many lists"
    )
    known, rest = parser.parse_known_args(argv)
    data, model = load_trained(known.ckpt_path, rest)
    service = RecommendationService(model, data, known.max_history, known.max_k, known.top_k, known.ann_probes)
    app = create_app(service, known.max_batch, known.batch_wait_ms)
    return uvicorn.Server(uvicorn.Config(app, host=known.host, port=known.port, access_log=False))


def serve_main(argv: list[str]) -> None:
    """`lightning-rec serve -c CONFIG... --ckpt_path CKPT [--host --port --top_k ...]`: the checkpoint's
    recommender behind HTTP. POST /recommend {"user": ID} or {"items": [ID, ...], "k": 10}; GET /health,
    /ready, /stats. The data and model come from the same YAML as training, as for `recommend`."""
    server(argv).run()
