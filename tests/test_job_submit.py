"""Jobs run under ``ray job submit --working-dir .`` against a real head, the way users run them.

The head is ``ray start --head --block`` from this venv, on 127.0.0.1 with free ports and its own
temp dir, with Ray 2.60 token auth on (``RAY_AUTH_MODE=token``, the token in a file named by
``RAY_AUTH_TOKEN_PATH``). It is stopped by signalling that one process, never with a bare
``ray stop``, which would also kill every other Ray instance on the machine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from ray._private.services import resolve_ip_for_localhost
from ray_processes import end_processes_mentioning

from vae.tf_backend import free_port

# A line Ray forwarded from a worker, actor or raylet: "(ProxyActor pid=380) ...", perhaps coloured; or one
# of the job supervisor's own, which a driver that ends fast can print before ("Running entrypoint for job ...").
_FORWARDED = re.compile(
    r"^(\x1b\[[0-9;]*m)*\([^)]*\)|^Running entrypoint for job |^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\tINFO "
)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RAY = VENV_BIN / "ray"
HEAD_CPUS = 4
# 2 digits x 2 speakers x takes 0-9: 20 test clips (takes 0-4), 20 train clips (takes 5-9).
DIGITS, SPEAKERS, TAKES = (1, 8), ("george", "yweweler"), range(10)


@dataclass
class Head:
    address: str  # the dashboard / Jobs API, what RAY_ADDRESS points a client at
    env: dict  # a client environment that carries the token
    token: str
    temp_dir: Path

    def run(self, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(RAY), *args], cwd=REPO, env=env or self.env, capture_output=True, text=True, timeout=timeout
        )

    def submit(
        self, submission_id: str, *entrypoint: str, timeout: float = 900, options: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess:
        proc = self.run(
            "job", "submit", "--address", self.address, "--submission-id", submission_id,
            "--working-dir", ".", *options, "--", *entrypoint, timeout=timeout,
        )  # fmt: skip
        assert proc.returncode == 0, (
            f"ray job submit {submission_id} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
            + self.diagnosis()
        )
        return proc

    def diagnosis(self) -> str:
        """Where the head no longer answers: the tails of its own logs, which say why."""
        if self.api("/api/version")[0]:
            return ""
        logs = self.temp_dir / "session_latest" / "logs"
        names = ("ray-start.log", "dashboard.log", "raylet.out", "gcs_server.out", "dashboard_agent.log")
        paths = [self.temp_dir / names[0], *(logs / n for n in names[1:])]
        tails = [f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in paths if p.is_file()]
        return "\nthe head does not answer; its logs:\n" + "\n".join(tails)

    def api(self, path: str, token: str | None = "") -> tuple[int, dict]:
        """GET a Jobs REST path: (HTTP status or 0 when unreachable, JSON body); ``token=None`` sends no Authorization header."""
        request = urllib.request.Request(self.address + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except OSError:  # not listening (yet)
            return 0, {}

    def job(self, submission_id: str) -> dict:
        status, info = self.api(f"/api/jobs/{submission_id}")
        assert status == 200, f"job {submission_id}: HTTP {status}"
        return info

    def last_json_line(self, submission_id: str) -> dict:
        """The driver's last stdout line: the JSON summary every job ends with.

        Ray forwards the cluster's actors' output into the same log, prefixed "(ActorName pid=...)",
        and it may arrive after the driver's last line (Serve's proxy does), as may the job supervisor's
        own lines for a driver that ends fast, so those lines are skipped.
        The log of a job already marked SUCCEEDED can still lag its driver's output on a loaded machine:
        asked again for up to 30 s until its last own line is JSON.
        """
        deadline = time.monotonic() + 30.0
        while True:
            status, body = self.api(f"/api/jobs/{submission_id}/logs")
            assert status == 200
            lines = [line for line in body["logs"].splitlines() if line.strip() and not _FORWARDED.match(line)]
            try:
                return json.loads(lines[-1])
            except (IndexError, json.JSONDecodeError):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"job {submission_id} ended on no JSON line of its own:\n{body['logs'][-4000:]}"
                    ) from None
                time.sleep(1.0)


def _stop(proc: subprocess.Popen, temp_dir: Path) -> None:
    """SIGTERM to our ``ray start --block`` stops its node; then end whatever of ours is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    end_processes_mentioning(str(temp_dir))


@pytest.fixture(scope="module")
def ray_head():
    temp_dir = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's socket paths have a length limit
    token = secrets.token_hex(32)
    token_file = temp_dir / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    # The venv first on PATH: the head runs `python` in job entrypoints from its own PATH.
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        RAY_USAGE_STATS_ENABLED="0",
    )
    dashboard_port, gcs_port = free_port(), free_port()
    # Ray's own processes find "their" cluster through RAY_ADDRESS or else the machine's latest one
    # (Train's placement-group cleaner does): pin it, other Ray instances share this machine.
    head_env = {**env, "RAY_ADDRESS": f"{resolve_ip_for_localhost('127.0.0.1')}:{gcs_port}"}
    command = [
        str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={HEAD_CPUS}",
        f"--temp-dir={temp_dir}", f"--port={gcs_port}", "--include-dashboard=true",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
        f"--ray-client-server-port={free_port()}", "--disable-usage-stats",
    ]  # fmt: skip
    log = open(temp_dir / "ray-start.log", "w")
    proc = subprocess.Popen(
        command, cwd=temp_dir, env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    head = Head(address=f"http://127.0.0.1:{dashboard_port}", env=env, token=token, temp_dir=temp_dir)
    try:
        deadline = time.monotonic() + 180
        while head.api("/api/jobs/")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up:\n{(temp_dir / 'ray-start.log').read_text()[-4000:]}")
            time.sleep(2)
        yield head
    finally:
        _stop(proc, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


# --------------------------------------------------------------------------- what gets uploaded


@pytest.mark.parametrize("include_gitignore", [True, False], ids=["with-gitignore", "rayignore-only"])
def test_working_dir_upload_leaves_out_local_trees(tmp_path, include_gitignore):
    from ray._private.runtime_env.packaging import create_package

    package = tmp_path / "working_dir.zip"
    create_package(str(REPO), package, include_gitignore=include_gitignore)
    names = zipfile.ZipFile(package).namelist()
    assert {"vae/dataset.py", "jobs/preprocess.py", "pyproject.toml"} <= set(names)
    top = {n.split("/")[0] for n in names}
    assert not top & {".venv", ".git", "runs", "build"}, sorted(top)
    assert not [n for n in names if "__pycache__" in n or ".egg-info" in n]
    assert package.stat().st_size < 20 * 2**20, f"{package.stat().st_size} bytes would be uploaded with every job"


# --------------------------------------------------------------------------- the head


@pytest.mark.slow
def test_the_head_refuses_clients_without_the_token(ray_head, tmp_path):
    assert ray_head.api("/api/jobs/", token=None)[0] in (401, 403)
    assert ray_head.api("/api/jobs/", token="0" * 64)[0] in (401, 403)

    def job_list(**auth: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in ray_head.env.items() if not k.startswith("RAY_AUTH")}
        env.update(HOME=str(tmp_path), **auth)  # HOME: no ~/.ray/auth_token to fall back on
        return ray_head.run("job", "list", "--address", ray_head.address, env=env, timeout=120)

    refused = job_list()
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr, refused.stderr[-2000:]
    # The token alone is not enough: a client must also say RAY_AUTH_MODE=token.
    assert job_list(RAY_AUTH_TOKEN=ray_head.token).returncode != 0
    assert job_list(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=ray_head.token).returncode == 0
    assert job_list(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=ray_head.env["RAY_AUTH_TOKEN_PATH"]).returncode == 0


@pytest.mark.slow
def test_submitted_job_runs_the_venv_python_on_the_uploaded_code(ray_head):
    probe = "import json, os, sys, vae; print(json.dumps([sys.executable, os.getcwd(), vae.__file__]))"
    ray_head.submit("probe", "python", "-c", probe)
    assert ray_head.job("probe")["status"] == "SUCCEEDED"
    executable, cwd, vae_file = ray_head.last_json_line("probe")
    assert Path(executable).parent == VENV_BIN
    assert Path(cwd).resolve() != REPO and Path(vae_file).resolve().is_relative_to(Path(cwd).resolve()), (cwd, vae_file)


# A quiet job on the cluster: the job's own runtime_env sets one of the console's variables, init_ray adds
# the others to it, and a task reports what its worker got.
ENV_PROBE = """
import json, os, ray
from vae import console
from vae.raysetup import init_ray
console.configure(verbose=False)
init_ray()
names = ("TF_CPP_MIN_LOG_LEVEL", "RAY_DATA_LOG_LEVEL", "FSDD_VAE_VERBOSE")
print(json.dumps(ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in names}).remote())))
"""


@pytest.mark.slow
def test_a_submitted_jobs_workers_get_the_console_settings_beside_its_own_runtime_env(ray_head):
    options = ("--runtime-env-json", json.dumps({"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}}))
    ray_head.submit("env", "python", "-c", ENV_PROBE, options=options)
    assert ray_head.last_json_line("env") == {
        "TF_CPP_MIN_LOG_LEVEL": "2",  # the job's own value wins
        "RAY_DATA_LOG_LEVEL": "ERROR",
        "FSDD_VAE_VERBOSE": None,
    }


@pytest.fixture(scope="module")
def submitted_features(ray_head, fsdd_dir, tmp_path_factory):
    clips = tmp_path_factory.mktemp("submit_clips")
    for d in DIGITS:
        for s in SPEAKERS:
            for t in TAKES:
                shutil.copy(fsdd_dir / f"{d}_{s}_{t}.wav", clips)
    output = tmp_path_factory.mktemp("submit_out") / "features"
    proc = ray_head.submit("preprocess", "python", "-m", "jobs.preprocess", "--input", str(clips), "--out", str(output))
    return proc, output


@pytest.mark.slow
def test_preprocess_job_succeeds_and_writes_parquet(ray_head, submitted_features):
    from vae.dataset import load_split_numpy, read_feature_config

    proc, output = submitted_features
    assert "40 clips written, 0 rejected" in proc.stdout, "the job's output streams back to the submitter"
    assert ray_head.job("preprocess")["status"] == "SUCCEEDED"
    summary = ray_head.last_json_line("preprocess")
    assert (summary["written"], summary["rejected"], summary["train"], summary["test"]) == (40, 0, 20, 20)
    shape = read_feature_config(str(output)).shape
    train = load_split_numpy(str(output), "train", columns=["digit", "spectrogram"])
    assert train["spectrogram"].shape == (20, *shape)
    assert sorted(set(train["digit"].tolist())) == sorted(DIGITS)


@pytest.mark.slow
def test_train_job_succeeds_and_writes_a_checkpoint(ray_head, submitted_features, tmp_path):
    _, features = submitted_features
    runs = tmp_path / "runs"
    ray_head.submit(
        "train", "python", "-m", "jobs.train", "--data", str(features), "--out", str(runs),
        "--name", "tiny", "--model", "tiny", "--epochs", "1", "--batch-size", "4", "--num-workers", "1",
    )  # fmt: skip
    assert ray_head.job("train")["status"] == "SUCCEEDED"
    result = ray_head.last_json_line("train")
    assert Path(result["run_dir"]) == runs / "tiny"
    checkpoint = Path(result["best_checkpoint"])
    assert checkpoint.is_dir() and checkpoint.is_relative_to(runs) and any(checkpoint.iterdir())
    assert result["best_metrics"]["epoch"] == 1


@pytest.mark.slow
def test_serve_job_deploys_the_service_on_the_cluster_and_returns(ray_head, fsdd_dir, tmp_path):
    """Under `ray job submit`, jobs.serve deploys to the cluster and ends; the service keeps running
    there until `serve shutdown`."""
    from tiny_checkpoint import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "checkpoint_0000", fsdd_dir)
    port = free_port()
    ray_head.submit("serve", "python", "-m", "jobs.serve", "--checkpoint", checkpoint, "--port", str(port))
    assert ray_head.job("serve")["status"] == "SUCCEEDED"
    summary = ray_head.last_json_line("serve")
    assert (
        summary["running"] is True
        and summary["url"] == f"http://127.0.0.1:{port}/"
        and summary["checkpoint"] == checkpoint
    )

    def get(path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as response:
            return response.status, response.read()

    assert get("/healthz")[0] == 200
    status, body = get("/api/generate?digit=4&seed=2")
    assert status == 200 and body[:4] == b"RIFF"
    stop = subprocess.run(
        [str(VENV_BIN / "serve"), "shutdown", "-y", "-a", ray_head.address],
        cwd=REPO, env=ray_head.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert stop.returncode == 0, stop.stderr[-2000:]
    with pytest.raises(OSError):
        get("/healthz")
