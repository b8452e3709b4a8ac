"""The generation service on real Ray Serve (the session's local Ray), over HTTP on 127.0.0.1.

The checkpoint is an untrained ``tiny`` VAE whose latent statistics come from real clips
of digits 0-8 only, so digit 9 is "not in the checkpoint". The page is driven in headless
Chromium through the DevTools protocol.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from chromium import DevTools, chromium
from tiny_checkpoint import DIGITS, make_checkpoint

from vae.config import FeatureConfig, ServeConfig, preset, to_dict

pytestmark = pytest.mark.slow
CONFIG = ServeConfig(
    max_clips=4, max_batch_size=8, batch_wait_timeout_s=0.05, max_ongoing_requests=16,
    max_upload_bytes=1 << 20, max_upload_seconds=5.0, vocoder_batch_sizes=(1, 8),  # two shapes to compile per replica
)  # fmt: skip
TOKEN_ENV, TOKEN = "FSDD_VAE_TEST_TOKEN", "test-token-0123456789abcdef"
SECURED = replace(CONFIG, auth_token_env=TOKEN_ENV, rate_limit_per_minute=6)


@pytest.fixture(scope="module")
def serve_checkpoint(fsdd_dir, tmp_path_factory) -> str:
    return make_checkpoint(tmp_path_factory.mktemp("serve") / "checkpoint_0000", fsdd_dir)


@pytest.fixture(scope="module")
def service(ray_local, serve_checkpoint, free_port):
    """The application on the session's Ray; Serve is shut down afterwards (its actors go with it)."""
    import ray
    from ray import serve

    from vae.serving import application, start

    cpus = ray.cluster_resources()["CPU"]
    port = free_port()
    start("127.0.0.1", port, CONFIG)
    try:
        serve.run(application(serve_checkpoint, CONFIG), name="fsdd-vae-test", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
    # The session's Ray is handed back whole: the replica's CPU is free again for the next module.
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < cpus and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == cpus, ray.available_resources()


@pytest.fixture(scope="module")
def conditional_service(service, fsdd_dir, tmp_path_factory):
    """A conditional model beside the first one, on the same Serve, at /conditional."""
    from ray import serve

    from vae.serving import application

    checkpoint = make_checkpoint(tmp_path_factory.mktemp("serve_cond") / "checkpoint_0000", fsdd_dir, conditional=True)
    config = replace(CONFIG, docs=True)
    serve.run(application(checkpoint, config), name="fsdd-vae-conditional", route_prefix="/conditional")
    try:
        yield service + "/conditional"
    finally:
        serve.delete("fsdd-vae-conditional")


@pytest.fixture(scope="module")
def secured_service(service, serve_checkpoint):
    """The first model again, at /secured, fresh, with a token (in its replica's environment) and a
    rate limit. Each test there speaks as its own client address: from 127.0.0.1 Serve's proxy takes
    the client from X-Forwarded-For."""
    from ray import serve

    from vae.serving import VaeService

    app = VaeService.options(
        max_ongoing_requests=SECURED.max_ongoing_requests,
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": {TOKEN_ENV: TOKEN}}},
    ).bind(serve_checkpoint, to_dict(SECURED))
    serve.run(app, name="fsdd-vae-secured", route_prefix="/secured")
    try:
        yield service + "/secured"
    finally:
        serve.delete("fsdd-vae-secured")


def as_client(address: str, token: str | None = TOKEN) -> dict[str, str]:
    return {"X-Forwarded-For": address, **({"Authorization": f"Bearer {token}"} if token else {})}


def http(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wav(y: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _check_clip(data: bytes, features: FeatureConfig) -> np.ndarray:
    y, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == features.sample_rate and y.shape == (features.n_samples,)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) > 0.5  # peak-normalised, not silent
    return y


FEATURES = preset(FeatureConfig, "default")


# --------------------------------------------------------------------------- endpoints


def test_batches_are_padded_to_few_vocoder_shapes():
    from vae.serving.app import padded_size

    sizes = ServeConfig().vocoder_batch_sizes
    assert [padded_size(n, sizes) for n in (0, 1, 2, 3, 5, 9, 17, 32, 33, 40, 64, 65)] == [
        0,
        1,
        2,
        4,
        8,
        16,
        32,
        32,
        33,
        40,
        64,
        65,
    ]
    assert {padded_size(n, sizes) % 32 or 32 for n in range(1, 600)} <= set(sizes), (
        "every vocoder chunk is an allowed size"
    )
    assert [padded_size(n, ()) for n in (1, 3, 17)] == [1, 3, 17]


def test_healthz_and_model_describe_the_checkpoint_without_its_path(service, serve_checkpoint):
    from vae.serving.app import checkpoint_id

    status, headers, body = http(service + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert serve_checkpoint.encode() not in body
    status, headers, body = http(service + "/api/model")
    model = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert serve_checkpoint.encode() not in body
    assert model["checkpoint_id"] == checkpoint_id(serve_checkpoint) and model["epoch"] == 0
    assert model["auth"] is False and model["limits"]["rate_limit_per_minute"] == 0
    assert model["digits_available"] == list(DIGITS)
    assert model["config"]["model"]["latent_dim"] == 4 and model["config"]["features"]["n_bins"] == FEATURES.n_bins
    assert model["metrics"]["val_recon_mse"] == 0.1
    assert (
        model["limits"]["max_clips"] == CONFIG.max_clips
        and model["batching"]["max_batch_size"] == CONFIG.max_batch_size
    )
    assert model["conditional"] is False and model["sampler"] == "expost"


def test_generate_a_digit_returns_a_wav_with_its_seed(service):
    status, headers, body = http(service + "/api/generate?digit=7&seed=3")
    assert status == 200 and headers["content-type"] == "audio/wav"
    assert (headers["x-digit"], headers["x-seed"]) == ("7", "3")
    _check_clip(body, FEATURES)


def test_generate_a_surprise_picks_and_returns_a_seed_and_the_digit_drawn(service):
    status, headers, body = http(service + "/api/generate")
    assert status == 200 and headers["x-digit"] == "prior" and int(headers["x-seed"]) >= 0
    assert int(headers["x-clip-digit"]) in DIGITS  # ex-post sampling draws a digit first
    _check_clip(body, FEATURES)


def test_generate_n_clips_as_json_with_spectrograms(service):
    status, headers, body = http(service + f"/api/generate?digit=2&seed=5&n={CONFIG.max_clips}")
    assert status == 200 and headers["content-type"] == "application/json"
    result = json.loads(body)
    assert (result["digit"], result["seed"], result["n"], result["sample_rate"]) == (
        2,
        5,
        CONFIG.max_clips,
        FEATURES.sample_rate,
    )
    import base64

    import matplotlib.image

    for clip in result["clips"]:
        assert clip["digit"] == 2
        _check_clip(base64.b64decode(clip["wav"]), FEATURES)
        image = matplotlib.image.imread(io.BytesIO(base64.b64decode(clip["spectrogram_png"])), format="png")
        assert image.shape[:2] == FEATURES.shape  # one pixel per bin and frame
        assert clip["problem"] is None
    # The spectrograms are a function of (digit, seed, n): asking again gives the same ones.
    again = json.loads(http(service + f"/api/generate?digit=2&seed=5&n={CONFIG.max_clips}")[2])
    assert [c["spectrogram_png"] for c in again["clips"]] == [c["spectrogram_png"] for c in result["clips"]]


def test_reconstruct_round_trip_matches_the_library(service, serve_checkpoint, fsdd_dir):
    """A 44.1 kHz stereo upload is resampled and checked as extraction does, and the reply is the
    library's own reconstruction of it."""
    import librosa

    from vae import generation
    from vae.checkpoint import load
    from vae.features import decode_audio, waveform_to_spectrogram

    y, rate = sf.read(fsdd_dir / "3_theo_12.wav", dtype="float32")
    y44 = librosa.resample(y, orig_sr=rate, target_sr=44100)
    upload = wav(np.stack([y44, 0.5 * y44], axis=1), 44100)

    status, headers, body = http(service + "/api/reconstruct", "POST", upload, {"Content-Type": "audio/wav"})
    assert status == 200 and headers["content-type"] == "audio/wav"
    served = _check_clip(body, FEATURES)

    loaded = load(serve_checkpoint)
    spec, lo, hi = waveform_to_spectrogram(decode_audio(upload, FEATURES).waveform, FEATURES)
    expected = generation.to_waveforms(loaded, generation.reconstruct(loaded, spec[None]), db_ranges=[(lo, hi)])[0]
    np.testing.assert_allclose(served, expected, atol=2e-3)  # 16-bit PCM

    status, headers, body = http(service + "/api/reconstruct?format=json", "POST", upload)
    result = json.loads(body)
    assert status == 200 and (result["source_sample_rate"], result["source_channels"]) == (44100, 2)
    assert result["duration_s"] == pytest.approx(len(y) / rate, abs=1e-3)
    assert np.isfinite(result["log_spectral_distance_db"]) and result["log_spectral_distance_db"] > 0
    assert result["original_spectrogram_png"] and result["spectrogram_png"] and result["trimmed"] is False


def _png_std(b64: str) -> float:
    import base64

    import matplotlib.image

    return float(matplotlib.image.imread(io.BytesIO(base64.b64decode(b64)), format="png")[..., :3].std())


def test_reconstruct_trim_cuts_leading_silence(service, fsdd_dir):
    y, rate = sf.read(fsdd_dir / "5_george_8.wav", dtype="float32")
    padded = wav(np.concatenate([np.zeros(rate, np.float32), y, np.zeros(rate, np.float32)]), rate)
    status, _, body = http(service + "/api/reconstruct?format=json&trim=1", "POST", padded)
    trimmed = json.loads(body)
    assert status == 200 and trimmed["trimmed"] is True and _png_std(trimmed["original_spectrogram_png"]) > 0.05
    # Untrimmed, the model hears only the first 0.76 s: the leading second of silence.
    status, _, body = http(service + "/api/reconstruct?format=json", "POST", padded)
    untrimmed = json.loads(body)
    assert status == 200 and untrimmed["trimmed"] is False
    assert _png_std(untrimmed["original_spectrogram_png"]) < 0.2 * _png_std(trimmed["original_spectrogram_png"])


def _replica(service: str) -> str:
    return json.loads(http(service + "/api/model")[2])["replica"]


def _bad_requests(fsdd_dir: Path) -> list[tuple[str, str, bytes | None, int, str]]:
    real = (fsdd_dir / "4_lucas_9.wav").read_bytes()
    rate = FEATURES.sample_rate
    too_long = wav(0.3 * np.sin(np.arange(int(6 * rate)) * 0.3).astype(np.float32), rate)
    return [
        ("GET", "/api/generate?digit=12", None, 400, "digit=12 is out of range"),
        ("GET", "/api/generate?digit=-1", None, 400, "out of range"),
        ("GET", "/api/generate?digit=seven", None, 400, "is not an integer"),
        ("GET", "/api/generate?digit=9", None, 400, "digit=9 is not in checkpoint"),
        ("GET", f"/api/generate?n={CONFIG.max_clips + 1}", None, 400, f"1 to {CONFIG.max_clips} clips"),
        ("GET", "/api/generate?n=0", None, 400, "out of range"),
        ("GET", "/api/generate?n=2&format=wav", None, 400, "format=json"),
        ("GET", "/api/generate?format=mp3", None, 400, "format='mp3'"),
        ("GET", "/api/generate?digt=7", None, 400, "unknown query parameter(s) ['digt']"),
        ("POST", "/api/generate", b"", 405, "method POST is not allowed on /api/generate; use GET"),
        ("GET", "/api/reconstruct", None, 405, "use POST"),
        ("DELETE", "/healthz", None, 405, "method DELETE"),
        ("GET", "/api/nothing", None, 404, "no endpoint /api/nothing"),
        ("POST", "/api/reconstruct", b"", 400, "empty body"),
        ("POST", "/api/reconstruct", b"this is not audio at all", 400, "not usable audio: not decodable audio"),
        ("POST", "/api/reconstruct", real[: len(real) // 2], 400, "not usable audio: truncated"),
        ("POST", "/api/reconstruct", wav(np.zeros(rate, np.float32), rate), 400, "not usable audio: silent"),
        ("POST", "/api/reconstruct", too_long, 413, "clip is 6.0 s long"),
        (
            "POST",
            "/api/reconstruct",
            b"RIFF" + bytes(CONFIG.max_upload_bytes),
            413,
            f"the most this service accepts is {CONFIG.max_upload_bytes}",
        ),
        ("POST", "/api/reconstruct?trim=maybe", real, 400, "trim='maybe'"),
        ("POST", "/api/reconstruct?digit=10", real, 400, "digit=10 is out of range"),
        ("GET", "/api/transfer?digit=4", None, 405, "use POST"),
        ("POST", "/api/transfer?digit=4", real, 400, "is not digit-conditional: transfer needs a digit-conditional"),
    ]


def test_bad_requests_get_4xx_json_naming_the_problem_and_the_replica_survives(service, fsdd_dir):
    replica = _replica(service)
    for method, path, body, status, message in _bad_requests(fsdd_dir):
        got, headers, data = http(service + path, method, body)
        assert got == status, (method, path, got, data[:300])
        assert headers["content-type"] == "application/json", (method, path)
        error = json.loads(data)
        assert message in error["error"] and error["status"] == status, (method, path, error)
    assert _replica(service) == replica, "a bad request restarted the replica"
    assert http(service + "/healthz")[0] == 200
    assert http(service + "/api/generate?digit=1&seed=1")[0] == 200


def _replica_pid(ray_address: str, app: str) -> int:
    from ray.util.state import list_actors

    filters = [("class_name", "=", f"ServeReplica:{app}:VaeService"), ("state", "=", "ALIVE")]
    (actor,) = list_actors(address=ray_address, filters=filters)
    return actor.pid


def _peak_rss_bytes(pid: int, reset: bool = False) -> int:
    """The process's peak resident memory (VmHWM); ``reset`` first brings the peak down to the current RSS."""
    if reset:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def _long_flac(seconds: float, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * rate), np.int16), rate, subtype="PCM_16", format="FLAC")
    return buf.getvalue()  # silence: an hour at 8 kHz is about 90 KB


def test_oversized_audio_is_refused_from_its_header_before_decoding(service, ray_local):
    """Duration and sample rate come from the header: a clip declaring hours, or 1 Hz (which
    resampling would turn into millions of samples), costs the replica neither time nor memory."""
    replica, pid = _replica(service), _replica_pid(ray_local, "fsdd-vae-test")
    one_hz = wav(np.zeros(20_000, np.float32), 1)  # 20,000 s at 1 Hz: 160 M samples once resampled
    hour = _long_flac(3600, FEATURES.sample_rate)
    assert len(one_hz) < 50_000 and len(hour) < 200_000
    cases = [
        (one_hz, 413, "clip is 20000.0 s long (20000 frames at 1 Hz); the most accepted is 5 s"),
        (hour, 413, f"clip is 3600.0 s long ({3600 * FEATURES.sample_rate} frames at {FEATURES.sample_rate} Hz)"),
        (wav(np.zeros(2, np.float32), 1), 400, "not usable audio: sample rate 1 Hz is outside 4000-192000 Hz"),
    ]
    before = _peak_rss_bytes(pid, reset=True)
    for upload, status, message in cases:
        start = time.monotonic()
        got, _, body = http(service + "/api/reconstruct", "POST", upload)
        assert time.monotonic() - start < 5, message
        assert got == status and message in json.loads(body)["error"], (got, body[:300])
    assert _peak_rss_bytes(pid) - before < 50 << 20, "the replica decoded a refused clip"
    assert _replica(service) == replica
    assert http(service + "/api/generate?digit=1&seed=1")[0] == 200


def test_first_trimmed_reconstruct_on_a_fresh_replica_is_quick(secured_service, fsdd_dir):
    """Trimming loads librosa (seconds, tens of them with a cold disk): the replica does it while it
    starts, so its first trimmed upload costs about what the next one does."""
    y, rate = sf.read(fsdd_dir / "1_jackson_3.wav", dtype="float32")
    padded = wav(np.concatenate([np.zeros(rate // 2, np.float32), y, np.zeros(rate // 2, np.float32)]), rate)
    seconds = []
    for client in ("203.0.113.1", "203.0.113.11"):
        start = time.monotonic()
        status, _, body = http(
            secured_service + "/api/reconstruct?format=json&trim=1", "POST", padded, as_client(client)
        )
        seconds.append(time.monotonic() - start)
        assert status == 200 and json.loads(body)["trimmed"] is True, body[:300]
    first, next_ = seconds
    assert first < next_ + 3, seconds  # loading librosa in a request costs several seconds


def test_api_needs_the_bearer_token_and_the_rest_stays_open(secured_service, service):
    client = "203.0.113.2"
    for headers, why in [
        (as_client(client, None), "none was sent"),
        (as_client(client, TOKEN + "x"), "is not this service's"),
        ({**as_client(client, None), "Authorization": f"Basic {TOKEN}"}, "scheme is 'Basic'"),
    ]:
        status, got, body = http(secured_service + "/api/model", headers=headers)
        assert status == 401 and got["www-authenticate"] == "Bearer" and why in json.loads(body)["error"], body
    assert http(secured_service + "/api/nothing", headers=as_client(client, None))[0] == 401
    assert http(secured_service + "/api/transfer?digit=1", "POST", b"RIFF", as_client(client, None))[0] == 401
    status, _, body = http(secured_service + "/api/model", headers=as_client(client))
    model = json.loads(body)
    assert status == 200 and model["auth"] is True and model["limits"]["rate_limit_per_minute"] == 6
    assert TOKEN.encode() not in body and TOKEN_ENV.encode() not in body
    assert http(secured_service + "/healthz")[0] == 200
    status, _, page = http(secured_service + "/")
    assert status == 200 and b'id="token"' in page
    for docs in ("/docs", "/openapi.json"):
        assert http(secured_service + docs)[0] == 404 and http(service + docs)[0] == 404


def test_each_client_is_rate_limited_with_retry_after(secured_service):
    limit = SECURED.rate_limit_per_minute
    answers = [http(secured_service + "/api/model", headers=as_client("203.0.113.3")) for _ in range(2 * limit)]
    statuses = [status for status, _, _ in answers]
    served = statuses.index(429)
    assert limit <= served < 2 * limit and set(statuses[:served]) == {200}, (
        statuses
    )  # more on a slow machine: it refills
    _, headers, body = answers[served]
    assert 1 <= int(headers["retry-after"]) <= 60 // limit
    assert "over 6 requests a minute from 203.0.113.3" in json.loads(body)["error"]
    assert http(secured_service + "/api/model", headers=as_client("203.0.113.3", None))[0] == 429
    assert http(secured_service + "/healthz", headers=as_client("203.0.113.3"))[0] == 200
    assert http(secured_service + "/api/model", headers=as_client("203.0.113.4"))[0] == 200  # another client


def test_rate_limiter_refills_and_forgets_the_least_recent_clients():
    from vae.serving.app import RateLimiter

    now = [0.0]
    limiter = RateLimiter(2, max_clients=2, clock=lambda: now[0])
    assert [limiter.take("a"), limiter.take("a")] == [0, 0] and limiter.take("a") == pytest.approx(30)
    now[0] = 15.0
    assert limiter.take("a") == pytest.approx(15)
    now[0] = 30.0
    assert limiter.take("a") == 0 and limiter.take("a") > 0
    limiter.take("b"), limiter.take("c")
    assert list(limiter.buckets) == ["b", "c"]


def test_a_replica_without_its_token_refuses_to_start(monkeypatch):
    from vae.serving.app import _token

    assert _token("") is None
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(RuntimeError, match=f"environment variable {TOKEN_ENV} is not set"):
        _token(TOKEN_ENV)
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(RuntimeError, match="holds 5 characters"):
        _token(TOKEN_ENV)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert _token(TOKEN_ENV) == TOKEN.encode()


def test_serve_config_checks_auth_rate_and_docs():
    from vae.config import ConfigError

    with pytest.raises(ConfigError, match="must name an environment variable"):
        replace(CONFIG, auth_token_env="my token").validate()
    with pytest.raises(ConfigError, match="rate_limit_per_minute=-1"):
        replace(CONFIG, rate_limit_per_minute=-1).validate()
    with pytest.raises(ConfigError, match="docs=true needs auth off"):
        replace(SECURED, docs=True).validate()


def test_concurrent_requests_are_batched(service, fsdd_dir):
    before = json.loads(http(service + "/api/model")[2])["batching"]
    upload = (fsdd_dir / "6_yweweler_20.wav").read_bytes()
    jobs = [("GET", f"/api/generate?digit={i % 9}&seed={i}", None) for i in range(8)]
    jobs += [("POST", "/api/reconstruct", upload)] * 8
    statuses, bodies = [None] * len(jobs), [None] * len(jobs)

    def call(i: int) -> None:
        statuses[i], _, bodies[i] = http(service + jobs[i][1], jobs[i][0], jobs[i][2])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert statuses == [200] * len(jobs)
    after = json.loads(http(service + "/api/model")[2])["batching"]
    for kind in ("generate", "reconstruct"):
        requests = after[kind]["requests"] - before[kind]["requests"]
        batches = after[kind]["batches"] - before[kind]["batches"]
        assert requests == 8 and batches < requests, (kind, before, after)
    # A (digit, seed) sounds the same asked alone as in a batch (Griffin-Lim starts from the seed's phase).
    for i in (0, 5):
        alone = _check_clip(http(service + jobs[i][1])[2], FEATURES)
        np.testing.assert_array_equal(alone, _check_clip(bodies[i], FEATURES))


def test_a_conditional_model_reconstructs_with_the_digit_the_clip_says(conditional_service, fsdd_dir):
    model = json.loads(http(conditional_service + "/api/model")[2])
    assert model["conditional"] is True and model["sampler"] == "expost"
    status, _, body = http(conditional_service + "/openapi.json")  # ServeConfig.docs on
    assert status == 200 and "/api/reconstruct" in json.loads(body)["paths"]
    assert http(conditional_service + "/docs")[0] == 200
    upload = (fsdd_dir / "2_george_30.wav").read_bytes()
    status, _, body = http(conditional_service + "/api/reconstruct", "POST", upload)
    assert status == 400 and "conditional model: say which digit the clip is, with digit=D" in json.loads(body)["error"]
    status, headers, body = http(conditional_service + "/api/reconstruct?digit=2", "POST", upload)
    assert status == 200 and headers["content-type"] == "audio/wav"
    _check_clip(body, FEATURES)
    status, headers, body = http(conditional_service + "/api/generate?digit=2&seed=4")
    assert status == 200 and headers["x-digit"] == "2"
    _check_clip(body, FEATURES)


def _transfer_requests(fsdd_dir: Path) -> list[tuple[str, bytes, int, str]]:
    real = (fsdd_dir / "4_lucas_9.wav").read_bytes()
    rate = FEATURES.sample_rate
    too_long = wav(0.3 * np.sin(np.arange(int(6 * rate)) * 0.3).astype(np.float32), rate)
    return [
        ("?digits=0,1", real, 400, "conditional model: say which digit the clip is, with digit=D"),
        ("?digit=10", real, 400, "digit=10 is out of range: digits are 0-9"),
        ("?digit=4&digits=7,10", real, 400, "digits='7,10': digits are 0-9, not 10"),
        ("?digit=4&digits=seven", real, 400, "is not a comma-separated list of digits (digits are 0-9)"),
        ("?digit=4&digits=3,3", real, 400, "name a digit twice"),
        ("?digit=4&format=wav", real, 400, "unknown query parameter(s) ['format']"),
        ("?digit=4&code_scale=1.5", real, 400, "code_scale=1.5 must be in [0, 1]"),
        ("?digit=4&code_scale=half", real, 400, "code_scale='half' is not a number"),
        ("?digit=4", b"", 400, "empty body"),
        ("?digit=4", b"not audio", 400, "not usable audio"),
        ("?digit=4", too_long, 413, "clip is 6.0 s long"),
        ("?digit=4", b"RIFF" + bytes(CONFIG.max_upload_bytes), 413, "the most this service accepts"),
    ]


def test_transfer_says_an_upload_as_every_digit_on_a_conditional_model(conditional_service, fsdd_dir):
    """Ten clips in digit order (or those asked for); raw with all of its code kept, the one of the clip's own
    digit its reconstruction; matched to the upload's voice and half of its code kept (the defaults), another clip."""
    import base64

    upload = (fsdd_dir / "3_theo_1.wav").read_bytes()
    said = {}
    for query in ("", "&raw=1&code_scale=1"):
        status, headers, body = http(conditional_service + "/api/transfer?digit=3" + query, "POST", upload)
        assert status == 200 and headers["content-type"] == "application/json", body[:300]
        result = json.loads(body)
        assert result["digit"] == 3 and result["digits"] == list(range(10)) and result["original_spectrogram_png"]
        assert [clip["digit"] for clip in result["clips"]] == list(range(10))
        said[query] = [_check_clip(base64.b64decode(clip["wav"]), FEATURES) for clip in result["clips"]]
    waves = said["&raw=1&code_scale=1"]
    status, _, recon = http(conditional_service + "/api/reconstruct?digit=3", "POST", upload)
    np.testing.assert_allclose(waves[3], _check_clip(recon, FEATURES), atol=2e-3)  # 16-bit PCM
    assert np.abs(waves[3] - waves[8]).max() > 0.05
    assert np.abs(said[""][3] - waves[3]).max() > 0.05
    status, _, body = http(conditional_service + "/api/transfer?digit=3&digits=8,0&trim=1", "POST", upload)
    some = json.loads(body)
    assert status == 200 and some["digits"] == [8, 0] and some["trimmed"] is True
    assert [clip["digit"] for clip in some["clips"]] == [8, 0]
    model = json.loads(http(conditional_service + "/api/model")[2])
    assert model["batching"]["transfer"]["requests"] == 3 and model["batching"]["transfer"]["clips"] == 22
    for query, data, status, message in _transfer_requests(fsdd_dir):
        got, _, answer = http(conditional_service + "/api/transfer" + query, "POST", data)
        assert got == status and message in json.loads(answer)["error"], (query, got, answer[:300])


# --------------------------------------------------------------------------- the page in a browser


@pytest.fixture
def browser(request, service, tmp_path):
    """Headless Chromium on the service's page. Its fake microphone beeps, or says the FSDD clip
    named by an indirect parameter."""
    flags = (
        "--autoplay-policy=no-user-gesture-required",
        # A fake microphone (it beeps) that needs no permission prompt: the record button works headless.
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    )  # fmt: skip
    with chromium(service + "/", tmp_path / "chromium-profile", *flags, *_fake_microphone(request)) as tools:
        yield tools


def _fake_microphone(request) -> list[str]:
    clip = getattr(request, "param", None)
    if clip is None:
        return []
    return [f"--use-file-for-fake-audio-capture={request.getfixturevalue('fsdd_dir') / clip}%noloop"]


AUDIO_STATE = """(() => {{
  const a = document.getElementById({id!r});
  return {{src: a.src, ready: a.readyState, duration: a.duration, error: a.error && a.error.code, played: a.played.length}};
}})()"""


def _played(tools: DevTools, audio_id: str) -> dict:
    tools.wait_for(
        f"document.getElementById({audio_id!r}).played.length > 0 && document.getElementById({audio_id!r}).readyState >= 2"
    )
    return tools.eval(AUDIO_STATE.format(id=audio_id))


EMPTY_IMAGES = (
    """[...document.images].filter((i) => i.getClientRects().length > 0 && i.naturalWidth === 0).map((i) => i.id)"""
)


def test_page_shows_a_plain_header_and_no_empty_images_before_a_click(browser, tmp_path):
    """Screenshots of the fresh page at 1280 and 390 px are left in tmp_path (page-1280.png, page-390.png)."""
    tools = browser
    tools.wait_for("document.querySelectorAll('#digits button').length === 10")
    for width in (1280, 390):
        tools.width(width)
        tools.screenshot(tmp_path / f"page-{width}.png")
        assert tools.eval(EMPTY_IMAGES) == [], width
        assert tools.eval("document.documentElement.scrollWidth") <= width + 1
    header = tools.eval("document.querySelector('h1').textContent + ' ' + document.getElementById('model').textContent")
    assert "VAE" in header and "epoch 0" in header and "/" not in header and "expost" not in header, header


def test_page_plays_a_seven_an_upload_and_a_recording_in_headless_chromium(browser, fsdd_dir, tmp_path):
    tools = browser
    tools.wait_for("document.querySelectorAll('#digits button').length === 10")
    assert tools.eval("document.querySelector('#digits button[data-digit=\"9\"]').disabled") is True
    assert tools.eval("document.getElementById('recon-digit-label').hidden") is True  # not a conditional model
    assert tools.eval("document.getElementById('transfer-unavailable').hidden") is False
    assert tools.eval("document.getElementById('transfer-upload').disabled") is True
    assert tools.eval("document.getElementById('transfer-record').hidden") is True
    assert "epoch 0" in tools.eval("document.getElementById('model').textContent")

    tools.eval("document.querySelector('#digits button[data-digit=\"7\"]').click()")
    state = _played(tools, "gen-audio")
    assert state["src"].startswith("blob:") and state["error"] is None
    assert state["duration"] == pytest.approx(FEATURES.clip_seconds, abs=0.01)
    assert tools.eval("document.getElementById('gen-spec').naturalWidth") == FEATURES.n_frames
    assert "a 7, seed" in tools.eval("document.getElementById('gen-status').textContent")

    upload = tmp_path / "8_theo_30.wav"
    shutil.copy(fsdd_dir / upload.name, upload)
    document = tools.send("DOM.getDocument")
    node = tools.send("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#upload")
    tools.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(upload)])
    state = _played(tools, "recon-audio")
    assert state["src"].startswith("blob:") and state["error"] is None
    assert state["duration"] == pytest.approx(FEATURES.clip_seconds, abs=0.01)
    original = tools.eval(AUDIO_STATE.format(id="orig-audio"))
    assert original["src"].startswith("blob:") and original["error"] is None
    tools.wait_for("document.getElementById('orig-spec').naturalWidth > 0")
    assert "log-spectral distance" in tools.eval("document.getElementById('recon-status').textContent")

    # Record in the browser: 4 s from the (fake, beeping) microphone, made a WAV by the page, trimmed by the service.
    tools.eval("document.getElementById('recon-status').textContent = ''")
    assert tools.eval("document.getElementById('record').hidden") is False
    tools.eval("document.getElementById('record').click()")
    tools.wait_for("document.getElementById('recon-status').textContent.includes('log-spectral distance')", timeout=90)
    recorded = tools.eval(AUDIO_STATE.format(id="orig-audio"))
    assert recorded["error"] is None and recorded["duration"] > 3, recorded
    assert tools.eval("document.getElementById('record').textContent") == "record"

    # A bad upload shows the service's message instead of a player.
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"not audio")
    tools.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(bad)])
    tools.wait_for("document.getElementById('recon-status').textContent.includes('not usable audio')")


def test_page_asks_a_conditional_model_for_the_digit_of_an_upload(browser, conditional_service, fsdd_dir, tmp_path):
    tools = browser
    tools.send("Page.navigate", url=conditional_service + "/")
    tools.wait_for("document.getElementById('model').textContent.includes('conditional')")
    assert tools.eval("document.getElementById('recon-digit-label').hidden") is False

    def upload(name: str, source: str) -> None:
        path = tmp_path / name
        shutil.copy(fsdd_dir / source, path)
        document = tools.send("DOM.getDocument")
        node = tools.send("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#upload")
        tools.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(path)])

    upload("my_recording.wav", "8_theo_31.wav")  # no digit in its name, none chosen
    tools.wait_for("document.getElementById('recon-status').textContent.includes('needs the digit')")
    tools.eval("document.getElementById('recon-digit').value = '8'")
    upload("another_recording.wav", "8_theo_31.wav")
    state = _played(tools, "recon-audio")
    assert state["src"].startswith("blob:") and state["error"] is None
    assert "log-spectral distance" in tools.eval("document.getElementById('recon-status').textContent")


TRANSFERRED = """[...document.querySelectorAll('#transfer-clips .clip')].map((c) => {
  const a = c.querySelector('audio');
  return {title: c.querySelector('h3').textContent, digit: a.dataset.digit, ready: a.readyState,
          duration: a.duration, error: a.error && a.error.code, played: a.played.length,
          image: c.querySelector('img').naturalWidth};
})"""


RECORDED_PEAK = """(async () => {
  const data = await (await fetch(document.getElementById('transfer-orig-audio').src)).arrayBuffer();
  return new Int16Array(data, 44).reduce((m, x) => Math.max(m, Math.abs(x)), 0) / 32767;
})()"""


@pytest.mark.parametrize("browser", ["3_theo_1.wav"], indirect=True)  # what the fake microphone says
def test_page_transfers_an_upload_and_a_recording_to_all_ten_digits(browser, conditional_service, fsdd_dir, tmp_path):
    tools = browser
    tools.send("Page.navigate", url=conditional_service + "/")
    tools.wait_for("document.getElementById('model').textContent.includes('conditional')")
    assert tools.eval("document.getElementById('transfer-unavailable').hidden") is True

    upload = tmp_path / "5_me_0.wav"  # the digit from its name
    shutil.copy(fsdd_dir / "5_theo_3.wav", upload)
    document = tools.send("DOM.getDocument")
    node = tools.send("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#transfer-upload")
    tools.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(upload)])
    tools.wait_for(
        f"(() => {{ const c = {TRANSFERRED}; return c.length === 10 && c.every((x) => x.ready >= 1 && x.image > 0); }})()"
    )
    clips = tools.eval(TRANSFERRED)
    assert [c["digit"] for c in clips] == [str(d) for d in range(10)]
    assert all(c["error"] is None and c["duration"] == pytest.approx(FEATURES.clip_seconds, abs=0.01) for c in clips)
    assert clips[5]["title"] == "a 5 (your own digit)" and clips[0]["title"] == "a 0"
    tools.wait_for(f"{TRANSFERRED}[0].played > 0")  # they play in turn
    assert "10 clips from your 5" in tools.eval("document.getElementById('transfer-status').textContent")

    # The microphone: the digit first, then 4 s of the fake microphone saying 3_theo_1, trimmed.
    tools.eval("document.getElementById('transfer-record').click()")
    tools.wait_for("document.getElementById('transfer-status').textContent.includes('first choose the digit')")
    tools.eval("document.getElementById('transfer-digit').value = '3'")
    tools.eval("document.getElementById('transfer-record').click()")
    tools.wait_for(
        "document.getElementById('transfer-status').textContent.includes('10 clips from your 3')", timeout=90
    )
    recorded = tools.eval(AUDIO_STATE.format(id="transfer-orig-audio"))
    assert recorded["error"] is None and recorded["duration"] > 3, recorded
    said = np.abs(sf.read(fsdd_dir / "3_theo_1.wav")[0]).max()  # a quiet clip: not the default microphone's beeps
    assert tools.eval(RECORDED_PEAK) == pytest.approx(said, rel=0.2)
    assert tools.eval(TRANSFERRED)[3]["title"] == "a 3 (your own digit)"


# --------------------------------------------------------------------------- the job, its own Ray, a published best/ on S3


def test_serve_job_serves_a_published_best_from_s3_until_interrupted(
    serve_checkpoint, make_bucket, free_port, tmp_path
):
    """``python -m jobs.serve`` as a user runs it: its own local Ray, the sweep's ``best`` pointer
    on S3 pinned to its version, SIGINT stops it cleanly with a JSON line last."""
    import signal

    from vae import storage
    from vae.serving.app import checkpoint_id

    best = make_bucket("serve-best") + "/sweep1/best"
    version = storage.publish(serve_checkpoint, best)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "jobs.serve", "--checkpoint", best, "--port", str(port), "--num-cpus", "2"]
    out, err = open(tmp_path / "stdout", "w+"), open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while '"running": true' not in (tmp_path / "stdout").read_text():  # printed once it serves and handles signals
            assert proc.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
            assert time.monotonic() < deadline, "the service did not come up"
            time.sleep(1)
        assert http(f"http://127.0.0.1:{port}/healthz")[0] == 200
        model = json.loads(http(f"http://127.0.0.1:{port}/api/model")[2])
        assert model["checkpoint_id"] == checkpoint_id(version)  # pinned: a later publish does not change it
        assert http(f"http://127.0.0.1:{port}/api/generate?digit=3&seed=1")[0] == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    lines = (tmp_path / "stdout").read_text().strip().splitlines()
    first = next(json.loads(line) for line in lines if line.startswith("{"))
    last = json.loads(lines[-1])
    assert first["running"] is True and first["url"] == f"http://127.0.0.1:{port}/" and first["checkpoint"] == version
    assert last["running"] is False
    with pytest.raises(OSError):
        http(f"http://127.0.0.1:{port}/healthz")


def test_serve_job_refuses_a_missing_checkpoint_before_starting_ray(tmp_path, capsys):
    from jobs import serve as serve_job

    assert serve_job.main(["--checkpoint", str(tmp_path / "nowhere")]) == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "does not exist" in last["error"] and "nowhere" in last["error"]


def test_a_checkpoint_written_before_new_config_keys_is_accepted_as_load_reads_it():
    """``application()`` checks a checkpoint without loading it; it reads old configs as ``load`` does."""
    from vae.checkpoint import check, load

    legacy = str(Path(__file__).parent / "data" / "legacy_checkpoints" / "normal")
    resolved, run_cfg = check(legacy)
    assert resolved == legacy and run_cfg == load(legacy).run_config and run_cfg.sampling.sampler == "prior"
