"""The generation service: one Ray Serve deployment around one checkpoint.

HTTP API (every error is a 4xx/5xx with a JSON body ``{"error": "...", "status": N}``):

- ``GET /api/generate?digit=D&seed=S&n=N&format=wav|json``: ``digit`` (0-9, optional: without it
  a surprise, as :func:`vae.generation.sample` draws one; ``X-Clip-Digit`` says which digit it
  stands for where the sampler draws one), ``seed`` (optional: drawn at random and returned in
  ``X-Seed``; clip ``j`` of a request sounds the same in any batch), ``n`` (1 to
  ``ServeConfig.max_clips``). One clip comes back as ``audio/wav``; ``format=json`` (the
  default when n > 1) returns ``{"digit", "seed", "n", "sample_rate", "clips": [{"digit",
  "wav", "spectrogram_png", "problem"}]}`` with WAV and PNG bytes base64-encoded.
- ``POST /api/reconstruct?digit=D&format=wav|json&trim=0|1``: the request body is an audio file
  (WAV, FLAC, OGG), decoded, resampled and checked exactly as extraction does
  (:func:`vae.features.decode_audio`, :func:`vae.features.waveform_to_spectrogram`); ``trim=1``
  first cuts leading and trailing silence (for recordings made in the browser); ``digit``, the
  digit the clip says, is required by a conditional model (ignored otherwise). The
  reconstruction comes back as ``audio/wav``, or as JSON with both spectrograms and the
  log-spectral distance between input and reconstruction.
- ``POST /api/transfer?digit=D&digits=0,7&trim=0|1&raw=0|1&code_scale=S``: any digit in your voice, from a
  digit-conditional model only (400 otherwise). The body, ``digit`` (required) and ``trim`` are as for
  reconstruct; the clip is encoded with ``digit`` and decoded with each of ``digits`` (comma-separated, none
  twice; default all ten) by :func:`vae.generation.transfer`, matched to the clip's voice unless ``raw``,
  keeping ``code_scale`` (0-1, default the checkpoint's) of its code. JSON: ``{"digit", "digits",
  "clips": [{"digit", "wav", "spectrogram_png", "problem"}], "original_spectrogram_png"}`` and the upload's rates and duration.
- ``GET /api/model``: the checkpoint's id (a digest of its URI, which stays private), epoch, the
  model's config, metrics, digits available, whether the model is conditional, where samples come
  from, limits, batching counters.
- ``GET /healthz``: ``{"status": "ok"}`` once the model is loaded (load balancers, Kubernetes probes).
- ``GET /``: the listening page (``index.html`` beside this file).
- ``GET /docs``, ``GET /openapi.json``: only with ``ServeConfig.docs``.

Uploads are checked from their header before anything is decoded (:func:`vae.features.check_header`):
duration, sample rate and decoded size. With ``ServeConfig.auth_token_env`` every ``/api/*`` request
needs ``Authorization: Bearer <token>`` (401 otherwise); with ``ServeConfig.rate_limit_per_minute``
a client over its rate gets 429 with ``Retry-After``. ``/``, ``/healthz`` stay open.

Concurrent requests are gathered by ``@serve.batch``: one batch of generate requests is
inverted by a single :func:`vae.generation.to_waveforms` call, one batch of uploads is
encoded, decoded and inverted by one :func:`vae.generation.reconstruct` and one
``to_waveforms`` call (a batch of transfers: every clip of them by one ``to_waveforms`` call),
padded to one of ``ServeConfig.vocoder_batch_sizes`` so that a
compiled (XLA) vocoder sees a few batch shapes, all compiled when the replica starts.
``ServeConfig.max_batch_size = 1`` is the one-request-at-a-time path. Batches run in a
worker thread, so the replica keeps accepting (and batching) requests while one
computes; a bad request is answered before it reaches a batch.
"""

import asyncio
import base64
import hashlib
import hmac
import io
import logging
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException

from vae import console
from vae.config import DIGIT_RANGE, N_DIGITS, IngestConfig, ServeConfig, from_dict, to_dict
from vae.harmonics import pitch_track

PAGE = Path(__file__).with_name("index.html")
DEPLOYMENT = "VaeService"
MAX_SEED = 2**31 - 1
ENDPOINTS = "GET /, GET /healthz, GET /api/model, GET /api/generate, POST /api/reconstruct, POST /api/transfer"
MIN_TOKEN_CHARS = 16  # ServeConfig.auth_token_env's token


class BadRequest(Exception):
    """A request the service refuses; ``status`` is the HTTP status, the message names the problem."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class GenerateItem:
    digit: int | None
    seed: int
    n: int


@dataclass(frozen=True)
class ReconstructItem:
    spectrogram: np.ndarray
    db_min: float
    db_max: float
    digit: int | None  # what the clip says; a conditional model encodes and decodes with it


@dataclass(frozen=True)
class TransferItem:
    upload: ReconstructItem
    targets: tuple[int, ...]  # the digits to say it as
    match_voice: bool = True  # moved to the upload's colour and pitch (vae.generation.transfer)
    f0: np.ndarray | None = None  # the upload's pitch track (a model with a pitch head)
    code_scale: float | None = None  # the share of its code kept (None: the checkpoint's)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def checkpoint_id(uri: str) -> str:
    """What the service says of its checkpoint: a digest of its URI, which it keeps to itself."""
    return hashlib.sha256(uri.encode()).hexdigest()[:12]


class RateLimiter:
    """A token bucket per client: up to ``per_minute`` requests at once, refilled at ``per_minute``
    a minute. The ``max_clients`` least recently seen are remembered (a forgotten one starts full)."""

    def __init__(self, per_minute: int, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.capacity, self.per_second = float(per_minute), per_minute / 60.0
        self.max_clients, self.clock = max_clients, clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when)

    def take(self, client: str) -> float:
        """0 when ``client`` may make a request now (it is counted), else the seconds until it may."""
        now = self.clock()
        tokens, then = self.buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.per_second)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.per_second
        self.buckets[client] = (tokens if wait else tokens - 1, now)
        if len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return wait


def _token(env: str) -> bytes | None:
    if not env:
        return None
    token = os.environ.get(env, "")
    if len(token) < MIN_TOKEN_CHARS:
        state = f"holds {len(token)} characters" if token else "is not set"
        raise RuntimeError(
            f"ServeConfig.auth_token_env={env!r}: the environment variable {env} {state} on this replica's node; "
            f"it must hold the token (at least {MIN_TOKEN_CHARS} characters) that clients send as "
            f"'Authorization: Bearer <token>'"
        )
    return token.encode()


def _bearer_refusal(header: str | None, token: bytes) -> str | None:
    """Why an ``Authorization`` header does not carry ``token``, or None when it does."""
    if not header:
        return "this service needs 'Authorization: Bearer <token>' on /api/* requests; none was sent"
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return f"the Authorization header's scheme is {scheme!r}; send 'Authorization: Bearer <token>'"
    if not hmac.compare_digest(value.strip().encode(), token):
        return "the bearer token in the Authorization header is not this service's"
    return None


api = FastAPI(
    title="fsdd-vae",
    description="Spoken digits from a trained VAE",
    docs_url=None,  # served by the deployment when ServeConfig.docs is on
    redoc_url=None,
    openapi_url=None,
)


@api.middleware("http")
async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    service = cast("VaeService", serve.get_replica_context().servable_object)
    refusal = service.refusal(request)
    return refusal if refusal is not None else await call_next(request)


@api.exception_handler(BadRequest)
async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
    return _error(exc.status, str(exc))


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return _error(405, f"method {request.method} is not allowed on {request.url.path}; use {allowed}")
    if exc.status_code == 404:
        return _error(404, f"no endpoint {request.url.path}; endpoints: {ENDPOINTS}")
    return _error(exc.status_code, str(exc.detail))


@api.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(500, f"internal error: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- request parsing


def _params(request: Request, known: tuple[str, ...]) -> dict[str, str]:
    params = dict(request.query_params)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise BadRequest(f"unknown query parameter(s) {unknown} for {request.url.path}; known: {list(known)}")
    return params


def _int(params: dict[str, str], name: str, low: int, high: int, what: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={value} is out of range: {what}")
    return value


def _choice(params: dict[str, str], name: str, options: tuple[str, ...], default: str) -> str:
    value = params.get(name) or default
    if value not in options:
        raise BadRequest(f"{name}={value!r}; choose from {list(options)}")
    return value


def _flag(params: dict[str, str], name: str) -> bool:
    return _choice(params, name, ("0", "1", "false", "true"), "0") in ("1", "true")


def _code_scale(params: dict[str, str], name: str) -> float | None:
    """A transfer's code scale, a number in [0, 1] (None when absent: the checkpoint's)."""
    from vae.config import ConfigError, check_code_scale

    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return check_code_scale(float(raw), name)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not a number") from None


def _digits(params: dict[str, str], name: str) -> tuple[int, ...]:
    """A comma-separated list of digits, none twice (every digit when absent)."""
    from vae.generation import GenerationError, check_digits

    raw = params.get(name)
    if raw is None or raw == "":
        return tuple(range(N_DIGITS))
    try:
        return tuple(check_digits(int(d) for d in raw.split(",")))
    except GenerationError as exc:
        raise BadRequest(f"{name}={raw!r}: {exc}") from None
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not a comma-separated list of digits ({DIGIT_RANGE})") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"body is {int(declared)} bytes; the most this service accepts is {limit}", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"body is over {limit} bytes, the most this service accepts", status=413)
        chunks.append(chunk)
    if not size:
        raise BadRequest("empty body: send the audio file (WAV, FLAC or OGG) as the request body")
    return b"".join(chunks)


def padded_size(n: int, sizes: tuple[int, ...]) -> int:
    """``n`` clips padded up to the next of ``sizes``; beyond the largest, whole chunks of it
    plus the remainder padded likewise (the vocoder inverts in chunks of the largest)."""
    if not sizes or n == 0:
        return n
    chunks, rest = divmod(n, sizes[-1])
    return chunks * sizes[-1] + (next(s for s in sizes if s >= rest) if rest else 0)


def spectrogram_image(spec: np.ndarray) -> bytes:
    """A PNG of a normalised spectrogram, one pixel per bin and frame (low frequencies at the bottom)."""
    import matplotlib.image

    buf = io.BytesIO()
    matplotlib.image.imsave(
        buf, np.asarray(spec, np.float32), cmap="magma", vmin=0.0, vmax=1.0, origin="lower", format="png"
    )
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- the deployment


@serve.deployment(name=DEPLOYMENT)
@serve.ingress(api)
class VaeService:
    def __init__(self, checkpoint: str, config: dict[str, Any]):
        from vae import generation
        from vae.checkpoint import load

        self.config = from_dict(ServeConfig, config).validate()
        self.loaded = load(checkpoint)
        self.features = self.loaded.run_config.features
        self.digits = generation.digits_available(self.loaded)
        self.conditional = self.loaded.run_config.model.conditional
        # Whether a clip asked for without a digit still stands for one (drawn with the training
        # frequencies): so with ex-post mixtures, a conditional decoder or the digit-tied prior.
        self.draws_digit = (
            generation.sampler(self.loaded) == "expost" or self.conditional or self.loaded.model.prior.uses_digits
        )
        self.page_html = PAGE.read_text()
        self.checkpoint_id = checkpoint_id(self.loaded.uri)
        self.token = _token(self.config.auth_token_env)
        per_minute = self.config.rate_limit_per_minute
        self.limiter = RateLimiter(per_minute) if per_minute else None
        self.counters = {
            kind: {"batches": 0, "requests": 0, "clips": 0} for kind in ("generate", "reconstruct", "transfer")
        }
        for handler in (self._generate_batch, self._reconstruct_batch, self._transfer_batch):
            # @serve.batch adds these setters; its stub types the method as a plain function.
            handler.set_max_batch_size(self.config.max_batch_size)  # type: ignore[union-attr]
            handler.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)  # type: ignore[union-attr]
        self._warm_up()

    def _warm_up(self) -> None:
        """Trace the model, compile the vocoder for every padded batch size and load what an upload
        and its trimming use now, not in a request."""
        from vae import generation
        from vae.features import wav_bytes

        seconds = min(self.features.clip_seconds, self.config.max_upload_seconds)
        t = np.arange(int(seconds * self.features.sample_rate)) / self.features.sample_rate
        tone = np.where(np.abs(t / seconds - 0.5) < 0.25, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0)  # silence either side
        self._features(wav_bytes(tone, self.features), trim=True, digit=None)
        spec = generation.sample(self.loaded, 1, seed=0)
        generation.reconstruct(self.loaded, spec, [self.digits[0] if self.digits else 0] if self.conditional else None)
        if self.conditional:  # a transfer decodes ten latents at once, matched to the upload's pitch track
            f0 = pitch_track(tone, self.features)[None] if self.loaded.run_config.model.pitch else None
            generation.transfer(self.loaded, spec, self.digits[0] if self.digits else 0, range(N_DIGITS), source_f0=f0)
        for size in self.config.vocoder_batch_sizes or (1,):
            generation.to_waveforms(self.loaded, np.repeat(spec, size, axis=0))

    def check_health(self) -> None:
        if self.loaded.model is None:
            raise RuntimeError("no model loaded")

    def refusal(self, request: Request) -> Response | None:
        """The answer to an /api/* request over its client's rate limit (429) or without the token
        (401), or None to let it through. The client is the peer address Serve's proxy saw (uvicorn
        takes X-Forwarded-For only from the proxies in its FORWARDED_ALLOW_IPS, by default 127.0.0.1)."""
        root, path = request.scope.get("root_path", ""), request.url.path
        if not path.removeprefix(root).startswith("/api/"):
            return None
        if self.limiter is not None:
            client = request.client.host if request.client else "unknown"
            wait = self.limiter.take(client)
            if wait:
                seconds = math.ceil(wait)
                return _error(
                    429,
                    f"over {self.config.rate_limit_per_minute} requests a minute from {client}; retry in {seconds} s",
                    {"Retry-After": str(seconds)},
                )
        if self.token is not None:
            why = _bearer_refusal(request.headers.get("authorization"), self.token)
            if why:
                return _error(401, why, {"WWW-Authenticate": "Bearer"})
        return None

    # ------------------------------------------------------------------ batched work (worker thread)

    def _generate(self, items: list[GenerateItem]) -> list[Any]:
        from vae import generation

        results: list[Any] = [None] * len(items)
        specs, owners, ranges, seeds = [], [], [], []
        for i, item in enumerate(items):
            try:
                z, drawn = generation.sample_latents(self.loaded, item.n, digit=item.digit, seed=item.seed)
                spec = generation.decode(self.loaded, z, drawn, seed=item.seed)
            except generation.GenerationError as exc:
                results[i] = BadRequest(str(exc))
                continue
            digits = [int(d) if self.draws_digit else item.digit for d in drawn]
            specs.append((spec, digits))
            owners.append(i)
            ranges += [generation.db_range(self.loaded, d) for d in digits]
            seeds += [
                item.seed + j for j in range(item.n)
            ]  # as jobs.generate --seed: the clip sounds the same in any batch
        if specs:
            waves = self._to_waveforms(np.concatenate([spec for spec, _ in specs]), ranges, seeds)
            start = 0
            for i, (spec, digits) in zip(owners, specs):
                results[i] = (spec, waves[start : start + len(spec)], digits)
                start += len(spec)
        self._count("generate", len(items), sum(len(s) for s in specs))
        return results

    def _reconstruct(self, items: list[ReconstructItem]) -> list[Any]:
        from vae import generation

        digits = np.array([item.digit for item in items]) if self.conditional else None
        recon = generation.reconstruct(self.loaded, np.stack([item.spectrogram for item in items]), digits)
        waves = self._to_waveforms(recon, [(item.db_min, item.db_max) for item in items], [0] * len(items))
        self._count("reconstruct", len(items), len(items))
        return list(zip(recon, waves))

    def _transfer(self, items: list[TransferItem]) -> list[Any]:
        from vae import generation

        said = [
            generation.transfer(
                self.loaded,
                item.upload.spectrogram[None],
                item.upload.digit,
                item.targets,
                match_voice=item.match_voice,
                code_scale=item.code_scale,
                source_f0=None if item.f0 is None else item.f0[None],
            )[0]
            for item in items
        ]
        ranges = [(item.upload.db_min, item.upload.db_max) for item in items for _ in item.targets]
        waves = self._to_waveforms(np.concatenate(said), ranges, [0] * len(ranges))
        self._count("transfer", len(items), len(ranges))
        starts = np.cumsum([0] + [len(s) for s in said])
        return [(specs, waves[a:b]) for specs, a, b in zip(said, starts[:-1], starts[1:])]

    def _to_waveforms(self, specs: np.ndarray, ranges: list, seeds: list[int]) -> list[np.ndarray]:
        """One :func:`vae.generation.to_waveforms` call for the whole batch, padded (repeating its
        last clip) to a size of ``ServeConfig.vocoder_batch_sizes``; the padding is dropped."""
        from vae import generation

        n = len(specs)
        extra = padded_size(n, self.config.vocoder_batch_sizes) - n
        if extra:
            specs = np.concatenate([specs, np.repeat(specs[-1:], extra, axis=0)])
            ranges, seeds = list(ranges) + [ranges[-1]] * extra, list(seeds) + [seeds[-1]] * extra
        return list(generation.to_waveforms(self.loaded, specs, db_ranges=ranges, seed=seeds))[:n]

    def _count(self, kind: str, requests: int, clips: int) -> None:
        c = self.counters[kind]
        c["batches"], c["requests"], c["clips"] = c["batches"] + 1, c["requests"] + requests, c["clips"] + clips

    @serve.batch(max_batch_size=ServeConfig.max_batch_size, batch_wait_timeout_s=ServeConfig.batch_wait_timeout_s)
    async def _generate_batch(self, items: list[GenerateItem]) -> list[Any]:
        return await asyncio.to_thread(self._generate, items)

    @serve.batch(max_batch_size=ServeConfig.max_batch_size, batch_wait_timeout_s=ServeConfig.batch_wait_timeout_s)
    async def _reconstruct_batch(self, items: list[ReconstructItem]) -> list[Any]:
        return await asyncio.to_thread(self._reconstruct, items)

    @serve.batch(max_batch_size=ServeConfig.max_batch_size, batch_wait_timeout_s=ServeConfig.batch_wait_timeout_s)
    async def _transfer_batch(self, items: list[TransferItem]) -> list[Any]:
        return await asyncio.to_thread(self._transfer, items)

    # ------------------------------------------------------------------ endpoints

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(self.page_html)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        self.check_health()
        return {"status": "ok", "checkpoint_id": self.checkpoint_id, "epoch": self.loaded.epoch}

    @api.get("/docs", include_in_schema=False)
    async def docs(self) -> HTMLResponse:
        if not self.config.docs:
            raise HTTPException(404)
        return get_swagger_ui_html(openapi_url="openapi.json", title=f"{api.title}: API")

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> JSONResponse:
        if not self.config.docs:
            raise HTTPException(404)
        return JSONResponse(request.app.openapi())

    @api.get("/api/model")
    async def model(self) -> dict[str, Any]:
        from vae import generation

        cfg = self.config
        return {
            "checkpoint_id": self.checkpoint_id,
            "epoch": self.loaded.epoch,
            "config": to_dict(self.loaded.run_config),
            "metrics": self.loaded.metrics,
            "digits_available": self.digits,
            "conditional": self.conditional,
            "sampler": generation.sampler(self.loaded),
            "sample_rate": self.features.sample_rate,
            "clip_seconds": self.features.clip_seconds,
            "limits": {
                "max_clips": cfg.max_clips,
                "max_upload_bytes": cfg.max_upload_bytes,
                "max_upload_seconds": cfg.max_upload_seconds,
                "rate_limit_per_minute": cfg.rate_limit_per_minute,
            },
            "auth": self.token is not None,
            "batching": {
                "max_batch_size": cfg.max_batch_size,
                "batch_wait_timeout_s": cfg.batch_wait_timeout_s,
                **self.counters,
            },
            "replica": serve.get_replica_context().replica_id.unique_id,
        }

    @api.get("/api/generate")
    async def generate(self, request: Request) -> Response:
        params = _params(request, ("digit", "seed", "n", "format"))
        digit = _int(params, "digit", 0, N_DIGITS - 1, DIGIT_RANGE)
        if digit is not None and digit not in self.digits:
            raise BadRequest(
                f"digit={digit} is not in checkpoint {self.checkpoint_id}: it has latent statistics for digits {self.digits}"
            )
        limit = self.config.max_clips
        n = _int(params, "n", 1, limit, f"a request may ask for 1 to {limit} clips (ServeConfig.max_clips)") or 1
        seed = _int(params, "seed", 0, MAX_SEED, f"seeds are 0-{MAX_SEED}")
        seed = secrets.randbelow(MAX_SEED) if seed is None else seed
        fmt = _choice(params, "format", ("wav", "json"), "wav" if n == 1 else "json")
        if fmt == "wav" and n > 1:
            raise BadRequest(f"format=wav returns one clip; ask for n={n} clips with format=json")

        result = await self._generate_batch(GenerateItem(digit, seed, n))
        if isinstance(result, Exception):
            raise result
        specs, waves, digits = result
        headers = {"X-Seed": str(seed), "X-Digit": "prior" if digit is None else str(digit)}
        if fmt == "wav":
            wav = await asyncio.to_thread(self._wav, waves[0])
            drawn = {} if digits[0] is None else {"X-Clip-Digit": str(digits[0])}
            return Response(wav, media_type="audio/wav", headers={**headers, **drawn, **self._problem_header(waves[0])})
        clips = await asyncio.to_thread(
            lambda: [{"digit": d, **self._clip_json(spec, y)} for spec, y, d in zip(specs, waves, digits)]
        )
        body = {"digit": digit, "seed": seed, "n": n, "sample_rate": self.features.sample_rate, "clips": clips}
        return JSONResponse(body, headers=headers)

    @api.post("/api/reconstruct")
    async def reconstruct(self, request: Request) -> Response:
        params = _params(request, ("digit", "format", "trim"))
        fmt = _choice(params, "format", ("wav", "json"), "wav")
        original, item, clip, trim = await self._upload(request, params)

        result = await self._reconstruct_batch(item)
        recon, y = result
        if fmt == "wav":
            wav = await asyncio.to_thread(self._wav, y)
            return Response(wav, media_type="audio/wav", headers=self._problem_header(y))

        def body() -> dict[str, Any]:
            from vae.features import fit_length, log_spectral_distance

            return {
                **self._clip_json(recon, y),
                "log_spectral_distance_db": log_spectral_distance(
                    fit_length(original, self.features), y, self.features
                ),
                **self._upload_json(item, clip, trim),
            }

        return JSONResponse(await asyncio.to_thread(body))

    @api.post("/api/transfer")
    async def transfer(self, request: Request) -> Response:
        from vae import generation

        params = _params(request, ("digit", "digits", "trim", "raw", "code_scale"))
        try:
            generation.check_conditional(self.loaded, self.checkpoint_id)
        except generation.GenerationError as exc:
            raise BadRequest(str(exc)) from None
        targets, match, scale = _digits(params, "digits"), not _flag(params, "raw"), _code_scale(params, "code_scale")
        y, item, clip, trim = await self._upload(request, params)
        f0 = (
            await asyncio.to_thread(pitch_track, y, self.features)
            if match and self.loaded.run_config.model.pitch
            else None
        )

        specs, waves = await self._transfer_batch(TransferItem(item, targets, match, f0, scale))

        def body() -> dict[str, Any]:
            clips = [{"digit": d, **self._clip_json(spec, y)} for d, spec, y in zip(targets, specs, waves)]
            return {"digit": item.digit, "digits": list(targets), "clips": clips, **self._upload_json(item, clip, trim)}

        return JSONResponse(await asyncio.to_thread(body))

    async def _upload(self, request: Request, params: dict[str, str]):
        """The request's audio as :meth:`_features` makes it, and whether it was trimmed: ``digit`` (required by
        a conditional model), ``trim`` and the body, checked in that order."""
        digit = _int(params, "digit", 0, N_DIGITS - 1, DIGIT_RANGE)
        if digit is None and self.conditional:
            raise BadRequest(
                f"checkpoint {self.checkpoint_id} is a conditional model: say which digit the clip is, with digit=D"
            )
        trim = _flag(params, "trim")
        data = await _read_body(request, self.config.max_upload_bytes)
        original, item, clip = await asyncio.to_thread(self._features, data, trim, digit)
        return original, item, clip, trim

    # ------------------------------------------------------------------ helpers (worker thread)

    def _features(self, data: bytes, trim: bool, digit: int | None):
        """Extraction's decoding, resampling and checks; the waveform, the batch item and the clip.
        The header is checked first: nothing over the limits is decoded or resampled."""
        from vae.features import AudioError, TooLarge, check_header, decode_audio, waveform_to_spectrogram

        try:
            check_header(data, self.config.max_upload_seconds)
            clip = decode_audio(data, self.features)
        except TooLarge as exc:
            raise BadRequest(
                f"{exc.reason} (the model hears the first {self.features.clip_seconds:g} s)",
                status=413,
            ) from None
        except AudioError as exc:
            raise BadRequest(f"body is not usable audio: {exc.reason}") from None
        y = clip.waveform
        if trim:
            import librosa

            y, _ = librosa.effects.trim(y, top_db=IngestConfig.top_db)
        try:
            spec, db_min, db_max = waveform_to_spectrogram(y, self.features)
        except AudioError as exc:
            raise BadRequest(f"body is not usable audio: {exc.reason}") from None
        return y, ReconstructItem(spec, db_min, db_max, digit), clip

    def _upload_json(self, item: ReconstructItem, clip, trim: bool) -> dict[str, Any]:
        """What a JSON answer says of the upload: its spectrogram as the model hears it, rates, duration, trimming."""
        return {
            "original_spectrogram_png": _b64(spectrogram_image(item.spectrogram)),
            "sample_rate": self.features.sample_rate,
            "source_sample_rate": clip.source_sample_rate,
            "source_channels": clip.source_channels,
            "duration_s": clip.duration_s,
            "trimmed": trim,
        }

    def _wav(self, y: np.ndarray) -> bytes:
        from vae.features import wav_bytes

        return wav_bytes(y, self.features)

    def _problem_header(self, y: np.ndarray) -> dict[str, str]:
        from vae.generation import check_audio

        problem = check_audio(y, self.features.silence_peak)
        return {"X-Audio-Problem": problem} if problem else {}

    def _clip_json(self, spec: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        from vae.generation import check_audio

        return {
            "wav": _b64(self._wav(y)),
            "spectrogram_png": _b64(spectrogram_image(spec)),
            "problem": check_audio(y, self.features.silence_peak),
        }


# --------------------------------------------------------------------------- building the application


def _serve_log_level() -> str:
    """Serve's log level: its warnings (a replica slow to start) always, its steps with --verbose."""
    return console.library_log_level(quiet="WARNING")


def start(host: str, port: int, config: ServeConfig = ServeConfig()) -> None:
    """Start Serve on the connected Ray cluster with its HTTP proxy on ``host:port`` (cluster-wide
    settings: if Serve already runs there, its own stay and Serve warns). Serve's own log (its steps,
    every request) shows with ``--verbose``, its warnings always."""
    timeout = str(config.proxy_timeout_s)
    logging.getLogger("ray.serve").setLevel(_serve_log_level())
    serve.start(
        http_options={"host": host, "port": port},
        logging_config={"log_level": _serve_log_level()},
        controller_options={
            "runtime_env": {
                "env_vars": {
                    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": timeout,
                    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": timeout,
                }
            }
        },
    )


def application(checkpoint: str, config: ServeConfig = ServeConfig()) -> serve.Application:
    """The Serve application for ``checkpoint`` (local, ``s3://``, or a published ``best/``).

    A published ``best/`` is pinned to its current version here, so every replica serves
    the same model; deploy again to serve a newer one. Raises
    :class:`vae.checkpoint.CheckpointError` for a missing or incomplete checkpoint.
    """
    from vae.checkpoint import check

    config = config.validate()
    checkpoint, _ = check(checkpoint)
    return VaeService.options(  # type: ignore[attr-defined]  # @serve.deployment makes the class a Deployment
        num_replicas=config.num_replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.num_cpus_per_replica},
        logging_config={"log_level": _serve_log_level()},
    ).bind(checkpoint, to_dict(config))


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve's application builder (``import_path: vae.serving:build_app`` in a config file, or
    ``serve run vae.serving:build_app checkpoint=URI max_batch_size=8``): ``args`` holds
    ``checkpoint`` and any :class:`vae.config.ServeConfig` field."""
    from vae.overrides import load_yaml

    args = dict(args)
    if "checkpoint" not in args:
        raise ValueError(f"application args need 'checkpoint' (a checkpoint URI); got {sorted(args)}")
    checkpoint = str(args.pop("checkpoint"))
    # `serve run` passes every value as a string; a config file passes typed YAML.
    typed = {k: load_yaml(v, f"application arg {k}") if isinstance(v, str) else v for k, v in args.items()}
    return application(checkpoint, from_dict(ServeConfig, typed))
