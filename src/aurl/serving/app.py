"""``aurl serve``: the FastAPI app: routes, validation, size limits, errors -> status codes.

One process, the model loaded once. ``/v1/generate`` resolves its JSON body with the CLI's own
:func:`aurl.generation.pipeline.plan_generation` and hands the plan to the continuous-batching
:class:`aurl.serving.scheduler.Scheduler`, so a seed gives the same piece as ``aurl generate``.

Bad input never costs the server more than a parse: bodies over ``max_body_bytes`` are refused
(413) before they are read, fields out of range are refused by pydantic (422 naming the field),
prompts are checked by the MIDI loader (400 with its reason, 413 when too large) and token budgets
over ``max_tokens`` are refused (413) before a row is taken. A full queue answers 429 with
``Retry-After``; a request past ``timeout_s`` answers 504 and frees its row; a client that goes
away frees its row at the next step.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from aurl.serving.metrics import Metrics
from aurl.serving.results import NoteTracker, PieceDecoder, score_notes
from aurl.serving.scheduler import Job, QueueFullError, Scheduler
from aurl.serving.schemas import (
    GenerateRequest,
    InfillRequest,
    InterpolateRequest,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
GRACE_S = 5.0
"""Seconds past a job's deadline after which the handler stops waiting for the scheduler."""
ROUTES = (
    "/", "/health", "/v1/models", "/v1/generate", "/v1/generate/stream", "/v1/infill",
    "/v1/interpolate", "/metrics",
)  # fmt: skip


@dataclass
class ServeConfig:
    """``aurl serve`` options."""

    host: str = "127.0.0.1"
    """Listen address; the default serves this machine only."""
    port: int = 8000
    max_batch: int = 16
    """Rows decoded together (continuous batching); batch 16 gave 5.4x the tokens/s of batch 1."""
    max_queue: int = 64
    """Requests waiting for a row beyond which the server answers 429."""
    timeout_s: float = 120.0
    """Per-request limit, queueing included (504 after it)."""
    max_body_bytes: int = 4_000_000
    """Largest request body read (base64 MIDI prompts are ~4/3 of the file)."""
    max_prompt_bytes: int = 1_000_000
    """Largest MIDI prompt after base64 decoding."""
    max_tokens: int = 8_320
    """Largest token budget of one request (32 bars x 4 beats x 64 + 64, the pipeline's cap)."""
    threads: int = 1
    """Torch threads of the decode loop (per-token work is tiny; 1 is fastest on few cores)."""
    decode_workers: int = 1
    """Processes that turn finished tokens into MIDI/MusicXML beside the decode loop (0: a thread)."""
    batching: bool = True
    """False: one request at a time through the CLI's own ``sample`` loop (the baseline)."""

    def __post_init__(self) -> None:
        for name in ("max_batch", "timeout_s", "max_body_bytes", "max_prompt_bytes", "max_tokens", "threads"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"serve {name}={getattr(self, name)} must be > 0")
        if self.max_queue < 0 or self.decode_workers < 0 or not 0 < self.port < 65536:
            raise ValueError(
                f"serve max_queue={self.max_queue} must be >= 0 and port={self.port} in 1..65535"
            )


# ---------------------------------------------------------------------------------------------
# middleware (pure ASGI: no body buffering)


class _Guard:
    """Refuses bodies over the limit before reading them (413) and records every request."""

    def __init__(self, app, cfg: ServeConfig, metrics_ref: dict) -> None:
        self.app, self.cfg, self.metrics_ref = app, cfg, metrics_ref

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}
        route = scope["path"] if scope["path"] in ROUTES else "other"

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        limit = self.cfg.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length")
        try:
            too_big = length is not None and int(length) > limit
        except ValueError:
            too_big = False
        if too_big:
            await _send_json(send_and_note, 413, {"detail": f"body of {int(length)} bytes exceeds the {limit}-byte limit"})  # fmt: skip
        else:
            total = 0

            async def limited():
                nonlocal total
                message = await receive()
                if message["type"] == "http.request":
                    total += len(message.get("body", b""))
                    if total > limit:
                        raise HTTPException(413, f"body exceeds the {limit}-byte limit")
                return message

            await self.app(scope, limited, send_and_note)
        metrics = self.metrics_ref.get("metrics")
        if metrics is not None:
            metrics.observe(route, status["code"], time.perf_counter() - t0)


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


# ---------------------------------------------------------------------------------------------
# helpers


def _b64(field: str, text: str, max_bytes: int) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"{field}: not valid base64") from None
    if len(data) > max_bytes:
        raise HTTPException(413, f"{field}: {len(data)} bytes of MIDI exceed the {max_bytes}-byte limit")  # fmt: skip
    return data


def _midi_file(field: str, text: str, cfg: ServeConfig, folder: Path) -> Path:
    """Decode and check an uploaded MIDI file with the loader; write it to ``folder``."""
    from aurl.data.midi_io import MidiLoadError, load_score_bytes

    data = _b64(field, text, cfg.max_prompt_bytes)
    try:
        load_score_bytes(data, field, max_bytes=cfg.max_prompt_bytes)
    except MidiLoadError as err:
        raise HTTPException(400, str(err)) from None
    path = folder / f"{field}.mid"
    path.write_bytes(data)
    return path


def _retry_after(scheduler: Scheduler, cfg: ServeConfig) -> str:
    s = scheduler.stats
    per_step = s.step_seconds / s.steps if s.steps else 0.01
    # a waiting request needs about queue/max_batch batches of ~64 steps before a row frees up
    return str(max(1, math.ceil(per_step * 64 * (scheduler.queued + 1) / cfg.max_batch)))


class _Done:
    """An asyncio future set from the scheduler thread when a job ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.future = loop, loop.create_future()

    def __call__(self, job: Job) -> None:
        self.loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


# ---------------------------------------------------------------------------------------------
# the app


def create_app(bundle, cfg: ServeConfig | None = None, model_name: str | None = None) -> FastAPI:
    """The app serving ``bundle`` (an :class:`aurl.bundle.Bundle`); the scheduler starts with it."""
    from aurl.generation.pipeline import _reproduce_command, plan_generation

    cfg = cfg or ServeConfig()
    name = model_name or Path(str(getattr(bundle, "path", "model"))).name
    mode = bundle.config.model.mode
    is_vae = mode in ("vae", "vae_gan")
    scheduler = None if is_vae else Scheduler(
        bundle.model, max_batch=cfg.max_batch, max_queue=cfg.max_queue, threads=cfg.threads,
        batching=cfg.batching,
    )  # fmt: skip
    metrics_ref: dict = {}
    side_lock = threading.Lock()  # infill / interpolate run one at a time beside the scheduler
    params = _parameters(bundle)

    decoder: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if scheduler is not None:
            decoder["d"] = PieceDecoder(bundle.tokenizer, cfg.decode_workers)
            await asyncio.to_thread(decoder["d"].warm)
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.stop()
            decoder.pop("d").close()

    app = FastAPI(
        title="Aurl",
        description="Compose music with a model trained on MIDI. Fields are `aurl generate`'s options.",
        lifespan=lifespan,
    )
    app.state.scheduler, app.state.config = scheduler, cfg
    if scheduler is not None:
        metrics_ref["metrics"] = Metrics(scheduler)
    app.add_middleware(_Guard, cfg=cfg, metrics_ref=metrics_ref)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def info() -> dict:
        return {
            "name": name, "mode": mode, "vocab_size": bundle.tokenizer.vocab_size,
            "parameters": params, "tokenizer": bundle.tokenizer.cfg.kind,
            "context": bundle.config.model.max_seq_len,
            "batching": bool(scheduler and scheduler.batching),
            "max_batch": scheduler.max_batch if scheduler else 0,
        }  # fmt: skip

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    def health() -> dict:
        """200 with the model's name, vocabulary and parameter count."""
        return {"status": "ok", **info()}

    @app.get("/v1/models")
    def models() -> dict:
        return {"models": [info()]}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = metrics_ref["metrics"].render() if metrics_ref else b""
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def make_job(req: GenerateRequest, tmp: Path) -> Job:
        if scheduler is None:
            raise HTTPException(
                400, f"model {name} is a {mode}: use /v1/interpolate (no /v1/generate)"
            )
        prompt = _midi_file("prompt", req.prompt, cfg, tmp) if req.prompt else None
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        try:
            plan = plan_generation(
                bundle, num=1, bars=req.bars, seconds=req.seconds, tokens=req.tokens,
                prompt=prompt, key=req.key, max_polyphony=req.max_polyphony,
                pitch_range=tuple(int(x) for x in req.pitch_range.split("-")) if req.pitch_range else None,
                density=req.density, soft=req.soft, time_signature=req.time_signature,
                batch_size=1, seed=seed, temperature=req.temperature, top_k=req.top_k,
                top_p=req.top_p, min_p=req.min_p, repetition_penalty=req.repetition_penalty,
                programs=req.programs,
            )  # fmt: skip
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        if plan.max_new > cfg.max_tokens:
            raise HTTPException(413, f"this request may need {plan.max_new} tokens; the limit is {cfg.max_tokens} (ask for fewer bars/seconds/tokens)")  # fmt: skip
        plan.settings["prompt"] = "<upload>" if prompt else None
        return Job(plan, seed, deadline=time.monotonic() + cfg.timeout_s)

    def submit(job: Job) -> None:
        try:
            scheduler.submit(job)
        except QueueFullError as err:
            raise HTTPException(429, f"server busy: {err}; retry later", headers={"Retry-After": _retry_after(scheduler, cfg)}) from None  # fmt: skip

    def describe(job: Job) -> dict:
        return {
            "seed": job.seed, "settings": job.plan.settings,
            "reproduce": _reproduce_command(bundle, job.plan.settings, Path("OUT"), job.seed),
            "queued_s": round(max(job.started - job.submitted, 0.0), 4),
            "decode_s": round(max(job.finished - job.started, 0.0), 4),
        }  # fmt: skip

    def failure(job: Job) -> HTTPException:
        if job.error == "timeout":
            return HTTPException(504, f"timed out after {cfg.timeout_s:.0f} s (timeout_s)")
        if job.error == "cancelled":
            return HTTPException(499, "cancelled: the client went away")
        return HTTPException(500, job.error or "generation failed")

    @app.post("/v1/generate")
    async def generate(req: GenerateRequest, request: Request) -> dict:
        """One piece: MIDI (base64), MusicXML, notes (seconds), and the settings and seed."""
        with tempfile.TemporaryDirectory(prefix="aurl-serve-") as tmp:
            job = await asyncio.to_thread(make_job, req, Path(tmp))
        done = _Done(asyncio.get_running_loop())
        job.on_done = done
        submit(job)
        while not done.future.done():
            await asyncio.wait({done.future}, timeout=0.5)
            if done.future.done():
                break
            if await request.is_disconnected():
                job.cancel()
            elif time.monotonic() > job.deadline + GRACE_S:  # the scheduler is stuck or stopped
                job.cancel()
                raise HTTPException(504, f"timed out after {cfg.timeout_s:.0f} s (timeout_s)")
        if job.error:
            raise failure(job)
        body = await decoder["d"].result(job.plan, job.new, musicxml=req.musicxml)
        return {**body, **describe(job)}

    @app.post("/v1/generate/stream")
    async def generate_stream(req: GenerateRequest) -> StreamingResponse:
        """Server-Sent Events: ``start``, then ``note`` / ``note_off`` as decoded, then ``done``
        (the body of /v1/generate) or ``error``."""
        with tempfile.TemporaryDirectory(prefix="aurl-serve-") as tmp:
            job = await asyncio.to_thread(make_job, req, Path(tmp))
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        tracker = NoteTracker(job.constraints, job.plan.bpm)

        def on_token(job: Job, tok: int | None) -> None:
            batch = tracker.events()
            if batch:
                loop.call_soon_threadsafe(events.put_nowait, batch)

        job.on_token = on_token
        job.on_done = lambda job: loop.call_soon_threadsafe(events.put_nowait, None)
        submit(job)

        async def stream():
            try:
                start = {"seed": job.seed, "bpm": job.plan.bpm, "settings": job.plan.settings}
                yield f"event: start\ndata: {json.dumps(start)}\n\n"
                while True:
                    batch = await events.get()
                    if batch is None:
                        break
                    for ev in batch:
                        yield f"event: {ev.pop('type')}\ndata: {json.dumps(ev)}\n\n"
                if job.error:
                    err = failure(job)
                    yield f"event: error\ndata: {json.dumps({'status': err.status_code, 'detail': err.detail})}\n\n"  # fmt: skip
                    return
                body = await decoder["d"].result(job.plan, job.new, musicxml=req.musicxml)
                yield f"event: done\ndata: {json.dumps({**body, **describe(job)})}\n\n"
            finally:
                if not job.done.is_set():
                    job.cancel()  # client gone: free the row

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})  # fmt: skip

    def run_infill(req: InfillRequest) -> dict:
        from aurl.data.midi_io import load_score
        from aurl.generation.infill import infill

        with tempfile.TemporaryDirectory(prefix="aurl-serve-") as tmp:
            src = _midi_file("midi", req.midi, cfg, Path(tmp))
            first, last = (int(x) for x in req.bars.split("-"))
            seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
            with side_lock:
                try:
                    summary = infill(
                        bundle, src, bars=(first, last), out=Path(tmp) / "out", seed=seed,
                        temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                        min_p=req.min_p, repetition_penalty=req.repetition_penalty, wav=False,
                        musicxml=req.musicxml, png=False,
                    )  # fmt: skip
                except ValueError as err:
                    raise HTTPException(422, str(err)) from None
            return _files_body(summary.pieces[0].files, seed, load_score)

    @app.post("/v1/infill")
    async def infill_route(req: InfillRequest) -> dict:
        """Regenerate bars FIRST-LAST of an uploaded MIDI file in context."""
        if is_vae:
            raise HTTPException(400, f"model {name} is a {mode}: infill needs a transformer model")
        return await asyncio.to_thread(run_infill, req)

    def run_interpolate(req: InterpolateRequest) -> dict:
        from aurl.data.midi_io import load_score
        from aurl.generation.latent import interpolate

        with tempfile.TemporaryDirectory(prefix="aurl-serve-") as tmp:
            a = _midi_file("a", req.a, cfg, Path(tmp))
            b = _midi_file("b", req.b, cfg, Path(tmp))
            with side_lock:
                try:
                    summary = interpolate(
                        bundle, a, b, out=Path(tmp) / "out", steps=req.steps, seed=req.seed,
                        temperature=req.temperature, top_p=req.top_p, wav=False,
                    )  # fmt: skip
                except ValueError as err:
                    raise HTTPException(422, str(err)) from None
            return {"pieces": [_files_body(p.files, req.seed, load_score) for p in summary.pieces]}

    @app.post("/v1/interpolate")
    async def interpolate_route(req: InterpolateRequest) -> dict:
        """VAE models: pieces along the slerp between the first segments of files a and b."""
        if not is_vae:
            raise HTTPException(400, f"model {name} is a {mode}, not a VAE: interpolation needs a VAE")  # fmt: skip
        return await asyncio.to_thread(run_interpolate, req)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The default handler echoes each bad input back, and fails (500) on the NaN/Infinity
        # that Python's JSON parser accepts; answer with the field and the reason only.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]  # fmt: skip
        summary = "; ".join(f"{'.'.join(map(str, d['loc'][1:])) or 'body'}: {d['msg']}" for d in detail)  # fmt: skip
        return JSONResponse({"detail": detail, "error": summary}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    return app


def _parameters(bundle) -> int:
    """Parameter count of a torch model, or from the config of an ONNX export."""
    import torch

    if isinstance(bundle.model, torch.nn.Module):
        return sum(p.numel() for p in bundle.model.parameters())
    from aurl.models import build_model

    with torch.device("meta"):  # shapes only, no memory
        return sum(p.numel() for p in build_model(bundle.config.model).parameters())


def _files_body(files: dict, seed: int, load_score) -> dict:
    """MIDI (base64), MusicXML and notes of a piece the pipeline wrote to ``files``."""
    midi = Path(files["midi"])
    score, _ = load_score(midi)
    body = {"midi": base64.b64encode(midi.read_bytes()).decode("ascii"), "notes": score_notes(score), "seed": seed}  # fmt: skip
    if "musicxml" in files:
        body["musicxml"] = Path(files["musicxml"]).read_text(encoding="utf-8")
    return body


def serve(model: str, cfg: ServeConfig) -> None:
    """Load ``model`` once and serve it with uvicorn until interrupted."""
    import uvicorn

    from aurl.generation.pipeline import load_model

    bundle = load_model(model)
    app = create_app(bundle, cfg)
    log.info("serving %s on http://%s:%d", model, cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
