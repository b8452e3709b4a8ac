"""Shared session fixtures: real FSDD clips, one local Ray, one real HTTP S3 endpoint, a small Parquet dataset.

Order matters: ``ray_local`` depends on ``s3_endpoint`` so the AWS_* variables are
in ``os.environ`` before Ray starts; Ray workers inherit the environment of the
raylet that spawns them, which is fixed when Ray starts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from vae.tf_backend import free_port as _free_port

REPO = Path(__file__).resolve().parents[1]
# Distinctive credentials, so that a test can search what was written for them.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAFSDDVAETESTKEY01",
    "AWS_SECRET_ACCESS_KEY": "fsdd-vae-test-secret-Zq3w9",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# The balanced slice behind ``small_parquet``: 10 digits x 5 speakers x these takes
# = 250 clips, 100 test (takes 0-1) and 150 train (takes 5-7).
SMALL_TAKES = (0, 1, 5, 6, 7)


# Tests that use any of these (directly or through another fixture) are marked ``slow``: they start
# Ray, a browser or a job, or need the full dataset. ``make test-fast`` runs the rest.
HEAVY_FIXTURES = frozenset({"ray_local", "full_parquet", "recogniser_dir", "browser"})


# Under pytest-xdist (``make test``: ``-n 2 --dist loadgroup``) a worker is a pytest session of its own,
# with its own session fixtures. Every test using the session's Ray (directly or through small_parquet,
# full_parquet, recogniser_dir) is put in one group, so one worker starts Ray and builds those datasets
# once; the other worker runs the rest, one test file at a time (a group per file), so module-scoped
# fixtures (a Ray head of its own, a two-node cluster, a trained checkpoint) are set up once too.
RAY_GROUP = "ray"


@pytest.fixture(autouse=True)
def console_env():
    """Each test starts with the console settings the session had: a job run in-process with
    ``--verbose`` (vae.console.configure) sets them in os.environ, where later jobs and Ray workers read them."""
    from vae.console import QUIET_ENV, TF_LOG_ENV, VERBOSE_ENV

    keys = (*QUIET_ENV, TF_LOG_ENV, VERBOSE_ENV)
    saved = {key: os.environ.get(key) for key in keys}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        names = getattr(item, "fixturenames", ())
        if HEAVY_FIXTURES.intersection(names):
            item.add_marker(pytest.mark.slow)
        group = RAY_GROUP if "ray_local" in names else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(optionalhook=True)  # an xdist hook, run in the controlling process
def pytest_xdist_node_collection_finished(node, ids):
    """Stop before any test runs when the groups above do not reach xdist's scheduler: every worker would
    start its own Ray and build its own datasets, and the run would take twice as long without failing."""
    lost = [nodeid for nodeid in ids if "@" not in nodeid]
    if node.config.getoption("dist") == "loadgroup" and lost:
        pytest.exit(
            f"--dist loadgroup lost the xdist_group of {lost[0]} (and {len(lost) - 1} more): pytest "
            f"{pytest.__version__} with this pytest-xdist drops the group from the node id "
            "(pytest-dev/pytest-xdist#1386); `make install` installs the versions in requirements.lock",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(scope="session")
def free_port():
    """``free_port() -> int``: a TCP port nothing listens on right now, outside the kernel's ephemeral range
    (vae.tf_backend.free_port): another process's outgoing connection cannot take it before the test binds it."""
    return _free_port


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    """The FSDD recordings folder: ``$FSDD_DIR`` or ``<repo>/../shared/fsdd/recordings``."""
    path = Path(os.environ.get("FSDD_DIR") or REPO.parent / "shared" / "fsdd" / "recordings").resolve()
    if not any(path.glob("*.wav")):
        pytest.fail(f"no FSDD recordings at {path}: set FSDD_DIR, or run python -m jobs.fetch_data --out DIR")
    return path


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real HTTP S3 endpoint on 127.0.0.1 (moto's ThreadedMotoServer), with the AWS_* environment pointing at it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {**S3_ENV, "AWS_ENDPOINT_URL": url}
    saved = {k: os.environ.get(k) for k in (*env, "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_SESSION_TOKEN")}
    for k in ("AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        yield url
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def make_bucket(s3_endpoint):
    """``make_bucket("name") -> "s3://name"``: creates the bucket on the test endpoint (idempotent)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=S3_ENV["AWS_DEFAULT_REGION"])

    def make(name: str) -> str:
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return f"s3://{name}"

    return make


@pytest.fixture(scope="session")
def ray_local(s3_endpoint):
    """One local Ray instance (4 logical CPUs) for the whole session; yields its address.

    A subprocess given ``RAY_ADDRESS=<address>`` joins it instead of starting its own.
    """
    import ray

    from vae.raysetup import init_ray

    if ray.is_initialized():
        ray.shutdown()
    saved = os.environ.pop("RAY_ADDRESS", None)  # tests always get their own local instance
    try:
        # The dashboard serves the State API, which Ray Train's placement-group cleaner queries to
        # release the resources of a Train run whose controller was killed (e.g. an early-stopped trial).
        init_ray(num_cpus=4, include_dashboard=True, object_store_memory=1 << 30)
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def small_slice(fsdd_dir: Path) -> list[str]:
    """The clips of ``small_parquet``: every digit and speaker, takes :data:`SMALL_TAKES`."""
    files = sorted(str(p) for p in fsdd_dir.glob("*.wav") if int(p.stem.rsplit("_", 1)[1]) in SMALL_TAKES)
    assert len(files) == 10 * 5 * len(SMALL_TAKES), f"expected 250 clips in {fsdd_dir}, found {len(files)}"
    return files


@pytest.fixture(scope="session")
def small_parquet(ray_local, fsdd_dir, tmp_path_factory) -> str:
    """Parquet (``default`` features) of 250 real clips, 150 train / 100 test, made by the real Ray Data job.

    Read it with ``vae.dataset.read_split`` / ``load_split_numpy`` / ``read_feature_config``.
    """
    from vae.config import FeatureConfig, preset
    from vae.dataset import extract

    out = tmp_path_factory.mktemp("small_parquet") / "features"
    summary = extract(small_slice(fsdd_dir), str(out), preset(FeatureConfig, "default"))
    assert (summary.written, summary.rejected, summary.train, summary.test) == (250, 0, 150, 100)
    return str(out)


@pytest.fixture(scope="session")
def full_parquet(ray_local, fsdd_dir, tmp_path_factory) -> str:
    """Parquet (``default`` features) of every clip in ``fsdd_dir`` (2,500: 2,250 train / 250 test), by the real Ray Data job."""
    from vae.config import FeatureConfig, preset
    from vae.dataset import extract

    out = tmp_path_factory.mktemp("full_parquet") / "features"
    summary = extract(str(fsdd_dir), str(out), preset(FeatureConfig, "default"))
    assert summary.rejected == 0 and summary.test > 0 and summary.train > 0, summary
    return str(out)


@pytest.fixture(scope="session")
def recogniser_dir(full_parquet, tmp_path_factory) -> str:
    """A digit recogniser trained once per session by ``python -m jobs.train_classifier`` on ``full_parquet``
    (default RecogniserConfig: real + Griffin-Lim clips). Load it with ``vae.evaluation.recogniser.load``."""
    import contextlib
    import io
    import json

    from jobs import train_classifier

    out = tmp_path_factory.mktemp("recogniser") / "recogniser"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = train_classifier.main(["--data", full_parquet, "--out", str(out)])
    last = json.loads(stdout.getvalue().strip().splitlines()[-1])
    # Exit code 1 with a saved model means "below 95%": test_recogniser reports that, not the fixture.
    assert "error" not in last and last["out"] == str(out), (code, last)
    return str(out)


@pytest.fixture
def vae_log(caplog):
    """What the project logged (``vae.*``, INFO and up) since the last call, read and cleared by calling
    it. Attached to the ``vae`` logger itself: a job run in this process stops it propagating."""
    logger, level = logging.getLogger("vae"), logging.getLogger("vae").level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)

    def said() -> str:
        text = caplog.text
        caplog.clear()
        return text

    yield said
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)
