"""The cluster definitions in cluster/ are what Ray's launcher and KubeRay will accept.

The AWS YAML goes through the launcher's own code: ``prepare_config`` + ``validate_config``
(the JSON schema ``ray up`` applies) and then the whole ``ray up`` bootstrap
(``_bootstrap_config``: instance-type resource detection, IAM, key pair, subnets, security
group) against a real HTTP EC2/IAM endpoint served by moto. Only launching instances is left out.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import json
import logging
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from lockfile import locked_versions

from vae.tf_backend import free_port

REPO = Path(__file__).resolve().parents[1]
AWS_YAML = REPO / "cluster" / "aws.yaml"
RAYJOB_YAML = REPO / "cluster" / "kuberay-rayjob.yaml"
RAYSERVICE_YAML = REPO / "cluster" / "kuberay-rayservice.yaml"
SERVE_YAML = REPO / "cluster" / "serve.yaml"
DOCKERFILE = REPO / "cluster" / "Dockerfile"
PROJECT_MOUNT = "/home/ray/fsdd-vae"
# Every install comes from the lock files, so the clusters must run the Ray they pin, whatever
# Ray this machine has installed.
LOCKED_RAY = locked_versions(REPO / "requirements.lock")["ray"]


def _aws_config() -> dict:
    return yaml.safe_load(AWS_YAML.read_text())


def _kube_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d]


def _rayjob() -> dict:
    (job,) = [d for d in _kube_docs() if d.get("kind") == "RayJob"]
    return job


def _rayservice_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(RAYSERVICE_YAML.read_text()) if d]


def _rayservice() -> dict:
    (service,) = [d for d in _rayservice_docs() if d.get("kind") == "RayService"]
    return service


def _import_attr(path: str):
    module, _, name = path.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------- AWS launcher


def test_aws_yaml_passes_the_launchers_schema_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(_aws_config()))
    validate_config(prepared)  # raises jsonschema.ValidationError / ValueError on a bad config

    nodes = prepared["available_node_types"]
    head = nodes[prepared["head_node_type"]]
    assert "GPU" not in head["resources"] and head["max_workers"] == 0
    gpu_types = {name: n for name, n in nodes.items() if n["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no GPU worker type"
    for name, node in gpu_types.items():
        assert node["min_workers"] == 0, f"{name} must scale from zero"
        assert node["max_workers"] >= 1
    assert prepared["provider"]["type"] == "aws"
    assert all("IamInstanceProfile" in n["node_config"] for n in nodes.values()), "every node needs S3 access"


def test_schema_validation_is_not_vacuous():
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = _aws_config()
    broken["available_node_types"]["gpu_worker"]["min_worker"] = 0  # typo of min_workers
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(broken))


def test_aws_yaml_installs_the_project_on_every_node():
    cfg = _aws_config()
    assert cfg["file_mounts"][PROJECT_MOUNT] == ".", (
        "the repository (run `ray up` from its root) is synced to every node"
    )
    assert ".venv" in cfg["rsync_exclude"]
    for key, lock in (("head_setup_commands", "requirements.lock"), ("worker_setup_commands", "requirements-gpu.lock")):
        commands = " ".join(cfg[key])
        assert f"--require-hashes --no-deps -r {PROJECT_MOUNT}/{lock}" in commands, f"{key} must install {lock}"
        assert f"--no-deps {PROJECT_MOUNT}" in commands.replace(f"-r {PROJECT_MOUNT}", ""), f"{key}: the project"
        assert "==" not in commands, f"{key}: versions come from the lock, not the command line"
    for image in (cfg["docker"]["image"], cfg["docker"]["head_image"]):
        assert image.startswith(f"rayproject/ray:{LOCKED_RAY}-"), image


def test_aws_nodes_share_the_cluster_token():
    cfg = _aws_config()
    token_dir = next(remote for remote, local in cfg["file_mounts"].items() if "fsdd-vae-cluster" in local)
    # setup_commands run on every node before `ray start`; the launcher sources ~/.bashrc for each command.
    exports = [c for c in cfg["setup_commands"] if "~/.bashrc" in c and "export" in c]
    assert exports, "setup_commands must export the token settings"
    assert "RAY_AUTH_MODE=token" in exports[0]
    assert f"RAY_AUTH_TOKEN_PATH={token_dir}/auth_token" in exports[0]


def _commented_command(text: str, start: str) -> list[str]:
    """The shell command in the YAML's comments that begins with ``start``, continuation lines joined."""
    lines = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    i = next(i for i, line in enumerate(lines) if line.startswith(start))
    command = []
    for line in lines[i:]:
        line = line.split(" # ")[0].strip()
        command.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return shlex.split(" ".join(command))


def test_aws_yaml_documents_the_submit_command():
    text = AWS_YAML.read_text()
    args = _commented_command(text, "ray job submit")
    assert args[:9] == ["ray", "job", "submit", "--working-dir", ".", "--", "python", "-m", "jobs.pipeline"], args
    assert {"--input", "--out", "--name", "--space", "--use-gpu"} <= set(args)
    assert args[args.index("--out") + 1].startswith("s3://")
    for command in ("ray up", "ray dashboard", "ray down", "RAY_AUTH_MODE=token"):
        assert command in text


def test_documented_pipeline_commands_parse_with_the_real_cli():
    """The commands in cluster/ are what jobs.pipeline accepts, and their search space loads."""
    from jobs.pipeline import parse_args
    from vae.search_space import load_space

    aws_args = _commented_command(AWS_YAML.read_text(), "ray job submit")
    aws = parse_args(aws_args[aws_args.index("jobs.pipeline") + 1 :])
    kube = parse_args(shlex.split(_rayjob()["spec"]["entrypoint"])[3:])
    for args in (aws, kube):
        assert args.use_gpu and args.out.startswith("s3://") and args.input.startswith("s3://")
    load_space(str(REPO / aws.space))  # relative to the working dir the job is submitted from
    workdir = re.search(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.M).group(1)
    load_space(str(REPO / Path(kube.space).relative_to(workdir)))  # the image's copy of the repository


@pytest.fixture
def moto_aws(monkeypatch, tmp_path):
    """A real HTTP EC2/IAM endpoint; HOME moved so the launcher's key pair lands in tmp."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-west-2",
        "HOME": str(tmp_path),
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_IAM"):
        monkeypatch.delenv(key, raising=False)
    yield tmp_path
    server.stop()


def test_ray_up_bootstrap_accepts_the_aws_yaml(moto_aws):
    from ray.autoscaler._private.commands import _bootstrap_config

    resolved = _bootstrap_config(copy.deepcopy(_aws_config()), no_config_cache=True)

    nodes = resolved["available_node_types"]
    for name, node in nodes.items():
        cfg = node["node_config"]
        assert cfg["SubnetIds"] and cfg["SecurityGroupIds"] and cfg["KeyName"], name
    # The launcher's own instance-type lookup agrees with the GPU count we declare.
    gpu = nodes["gpu_worker"]["resources"]
    assert gpu["GPU"] == 1 and any(k.startswith("accelerator_type:") for k in gpu), gpu
    assert list((moto_aws / ".ssh").glob("ray-autoscaler_*.pem")), "the launcher created its SSH key"


# --------------------------------------------------------------------------- KubeRay


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def _limit(container: dict, name: str) -> int:
    return int(container.get("resources", {}).get("limits", {}).get(name, 0))


def test_kuberay_manifest_is_a_rayjob_with_cpu_head_and_gpu_workers():
    job = _rayjob()
    assert job["apiVersion"] == "ray.io/v1"
    assert job["metadata"]["name"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == LOCKED_RAY
    assert cluster["enableInTreeAutoscaling"] is True

    (head,) = _containers(cluster["headGroupSpec"]["template"])
    assert _limit(head, "nvidia.com/gpu") == 0
    assert head["resources"]["limits"]["cpu"]

    groups = cluster["workerGroupSpecs"]
    gpu_groups = [g for g in groups if any(_limit(c, "nvidia.com/gpu") >= 1 for c in _containers(g["template"]))]
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"
    for group in gpu_groups:
        assert group["groupName"]
        assert group["minReplicas"] == 0 <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1
        (worker,) = _containers(group["template"])
        # Requests equal to limits for extended resources is what Kubernetes requires.
        assert worker["resources"]["requests"]["nvidia.com/gpu"] == worker["resources"]["limits"]["nvidia.com/gpu"]


def test_kuberay_entrypoint_runs_the_pipeline_on_s3():
    job = _rayjob()
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:3] == ["python", "-m", "jobs.pipeline"]
    assert {"--input", "--out", "--name", "--space", "--use-gpu"} <= set(args)
    assert args[args.index("--out") + 1].startswith("s3://")
    assert args[args.index("--input") + 1].startswith("s3://")

    # The space file is read on the head, from the image cluster/Dockerfile builds.
    space = args[args.index("--space") + 1]
    dockerfile = DOCKERFILE.read_text()
    workdir = re.search(r"^WORKDIR\s+(\S+)", dockerfile, re.M).group(1)
    assert space.startswith(workdir + "/"), (space, workdir)
    relative = space[len(workdir) + 1 :]
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", dockerfile, re.M)
    assert any(relative.split("/")[0] in src.split() for src in copied), f"{relative} is not copied into the image"


def test_kuberay_every_ray_process_gets_the_token_and_s3_identity():
    docs = _kube_docs()
    job = _rayjob()
    cluster = job["spec"]["rayClusterSpec"]
    envs = {
        "submitter": _containers(job["spec"]["submitterPodTemplate"])[0]["env"],
        "autoscaler": cluster["autoscalerOptions"]["env"],
        "head": _containers(cluster["headGroupSpec"]["template"])[0]["env"],
    }
    for group in cluster["workerGroupSpecs"]:
        envs[group["groupName"]] = _containers(group["template"])[0]["env"]
    secrets = set()
    for who, env in envs.items():
        by_name = {e["name"]: e for e in env}
        assert by_name["RAY_AUTH_MODE"]["value"] == "token", who
        secrets.add(by_name["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"])
    assert len(secrets) == 1, f"all Ray processes must share one token secret, got {secrets}"

    roles = {
        d["metadata"]["name"]: d["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        for d in docs
        if d.get("kind") == "ServiceAccount"
    }
    head_role = roles[cluster["headGroupSpec"]["template"]["spec"]["serviceAccountName"]]
    assert head_role.endswith(":role/fsdd-vae-head"), head_role
    for group in cluster["workerGroupSpecs"]:  # workers on a role of their own, which cannot write tune/
        assert roles[group["template"]["spec"]["serviceAccountName"]].endswith(":role/fsdd-vae-worker"), group[
            "groupName"
        ]


def test_cluster_image_runs_the_locked_ray_and_installs_the_lock():
    text = DOCKERFILE.read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(LOCKED_RAY)}-py311-gpu$", text, re.M)
    assert re.search(
        r"^RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements-gpu.lock$", text, re.M
    )
    assert re.search(r"^RUN pip install --no-cache-dir --no-deps \.$", text, re.M)
    assert "==" not in text, "versions come from the lock"


# --------------------------------------------------------------------------- Serve: config file and KubeRay RayService


def _serve_app(config: dict):
    """The one application of a Serve config, through Serve's own schema (what `serve deploy` applies)."""
    from ray.serve.schema import ServeDeploySchema

    (app,) = ServeDeploySchema.parse_obj(config).applications
    return app


def test_serve_yaml_passes_serves_schema_and_its_args_build_the_app():
    from vae.config import ServeConfig, from_dict
    from vae.serving import build_app

    config = yaml.safe_load(SERVE_YAML.read_text())
    app = _serve_app(config)
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert app.route_prefix == "/" and _import_attr(app.import_path) is build_app
    args = dict(app.args)
    checkpoint = args.pop("checkpoint")
    assert checkpoint.startswith("s3://") and checkpoint.endswith("/best"), "serves a sweep's published best/"
    assert from_dict(ServeConfig, args).validate().num_replicas >= 1
    for command in ("serve deploy cluster/serve.yaml", "serve status", "serve shutdown"):
        assert command in SERVE_YAML.read_text()


def test_serve_yaml_arg_typos_fail_when_the_app_is_built():
    from vae.config import ConfigError
    from vae.serving import build_app

    with pytest.raises(ConfigError, match="max_clip"):
        build_app({"checkpoint": "s3://BUCKET/x/best", "max_clip": 4})
    with pytest.raises(ValueError, match="checkpoint"):
        build_app({"max_clips": 4})


def test_kuberay_rayservice_serves_the_serve_yaml_with_token_auth():
    service = _rayservice()
    assert service["apiVersion"] == "ray.io/v1" and service["metadata"]["name"]
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    _serve_app(serve_config)
    assert serve_config == yaml.safe_load(SERVE_YAML.read_text()), "serveConfigV2 must be cluster/serve.yaml"

    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == LOCKED_RAY
    # The operator deploys serveConfigV2 through the dashboard, so it must hold the token itself.
    assert cluster["authOptions"]["mode"] == "token"
    (account,) = [d for d in _rayservice_docs() if d.get("kind") == "ServiceAccount"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    (job_image,) = {c["image"] for c in _containers(_rayjob()["spec"]["rayClusterSpec"]["headGroupSpec"]["template"])}
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
        (container,) = _containers(pod)
        assert container["image"] == job_image, "the same project image as the RayJob"
        assert {"containerPort": 8000, "name": "serve"} in container["ports"]


def test_serve_yaml_turns_on_auth_and_a_rate_limit_with_the_token_from_the_nodes_environment():
    """The proxy binds 0.0.0.0: /api/* needs a token, named not held by the config (KubeRay: a Secret)."""
    from vae.config import ServeConfig, from_dict

    args = dict(_serve_app(yaml.safe_load(SERVE_YAML.read_text())).args)
    args.pop("checkpoint")
    cfg = from_dict(ServeConfig, args).validate()
    assert cfg.auth_token_env and cfg.rate_limit_per_minute > 0 and not cfg.docs
    assert f"export {cfg.auth_token_env}=" in SERVE_YAML.read_text()
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        (container,) = _containers(pod)
        (env,) = [e for e in container["env"] if e["name"] == cfg.auth_token_env]
        assert set(env) == {"name", "valueFrom"} and env["valueFrom"]["secretKeyRef"]["key"], env


def test_kuberay_rayservice_workers_fit_the_replicas():
    from vae.config import ServeConfig, from_dict

    service = _rayservice()
    args = dict(yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"])
    args.pop("checkpoint")
    serve_cfg = from_dict(ServeConfig, args).validate()
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "replicas run on workers"
    cpus = sum(
        g["minReplicas"] * int(_containers(g["template"])[0]["resources"]["limits"]["cpu"])
        for g in cluster["workerGroupSpecs"]
    )
    assert cpus >= serve_cfg.num_replicas * serve_cfg.num_cpus_per_replica, "the minimum workers hold every replica"


# --------------------------------------------------------------------------- least-privilege IAM (cluster/iam/)

IAM = REPO / "cluster" / "iam"


def _policy(name: str) -> dict:
    return json.loads((IAM / f"{name}.json").read_text())


def _statements(*names: str) -> list[dict]:
    return [s for n in names for s in _policy(n)["Statement"]]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _allowed(statements: list[dict], action: str, resource: str) -> bool:
    """IAM's verdict for one request by ARN pattern alone: an explicit Deny wins, then any Allow.
    (Conditions are checked separately below.)"""

    def matches(s):
        return any(fnmatch.fnmatchcase(action, a) for a in _as_list(s["Action"])) and any(
            fnmatch.fnmatchcase(resource, r) for r in _as_list(s["Resource"])
        )

    hits = [s for s in statements if matches(s)]
    return bool(hits) and not any(s["Effect"] == "Deny" for s in hits)


def _project_prefixes() -> tuple[str, str, str]:
    """(bucket, storage prefix, input prefix) of the documented submit command in cluster/aws.yaml."""
    args = _commented_command(AWS_YAML.read_text(), "ray job submit")
    storage_uri, input_uri = args[args.index("--out") + 1], args[args.index("--input") + 1]
    bucket, storage_prefix = storage_uri[len("s3://") :].split("/", 1)
    assert input_uri.startswith(f"s3://{bucket}/")
    return bucket, storage_prefix, input_uri[len(f"s3://{bucket}/") :]


@pytest.mark.parametrize("path", sorted(IAM.glob("*.json")), ids=lambda p: p.name)
def test_iam_policies_are_well_formed(path):
    doc = json.loads(path.read_text())
    assert doc["Version"] == "2012-10-17" and doc["Statement"]
    sids = [s["Sid"] for s in doc["Statement"]]
    assert len(set(sids)) == len(sids), "Sids must be unique"
    for s in doc["Statement"]:
        assert set(s) <= {"Sid", "Effect", "Action", "Resource", "Condition", "Principal"}, s
        assert s["Effect"] in ("Allow", "Deny")
        for action in _as_list(s["Action"]):
            service, _, name = action.partition(":")
            assert service in ("s3", "ec2", "iam", "sts") and name and "*" not in name, f"{path.name}: {action}"
        assert ("Principal" in s) == (path.name == "ec2-trust.json") and ("Resource" in s) != ("Principal" in s)


def test_storage_access_is_scoped_to_the_project_prefixes():
    bucket, storage_prefix, input_prefix = _project_prefixes()
    statements = _statements("storage-policy")
    for s in statements:
        for arn in _as_list(s["Resource"]):
            arn = arn.replace("BUCKET", bucket)
            if s["Action"] == "s3:ListBucket":
                assert arn == f"arn:aws:s3:::{bucket}"
                prefixes = s["Condition"]["StringLikeIfExists"]["s3:prefix"]
                assert set(prefixes) == {storage_prefix, f"{storage_prefix}/*", input_prefix, f"{input_prefix}/*"}
            else:
                assert arn in (
                    f"arn:aws:s3:::{bucket}/{storage_prefix}/*",
                    f"arn:aws:s3:::{bucket}/{input_prefix}/*",
                ), arn
    s3 = [s for s in statements if s["Action"] != "s3:ListBucket"]
    obj = lambda key: f"arn:aws:s3:::BUCKET/{key}"  # noqa: E731
    assert _allowed(s3, "s3:PutObject", obj(f"{storage_prefix}/sweep1/trials/t/checkpoint_0001/model.weights.h5"))
    assert _allowed(s3, "s3:GetObject", obj(f"{input_prefix}/0_george_0.wav"))
    assert not _allowed(s3, "s3:PutObject", obj(f"{input_prefix}/0_george_0.wav")), "the recordings are read-only"
    for key in ("other-project/x", f"{storage_prefix}-other/x", "fsdd/other/x"):
        assert not _allowed(s3, "s3:GetObject", obj(key)) and not _allowed(s3, "s3:PutObject", obj(key)), key


def test_gpu_workers_have_no_ec2_or_passrole_and_cannot_write_what_the_head_unpickles():
    _, storage_prefix, _ = _project_prefixes()
    cfg = _aws_config()
    profiles = {name: n["node_config"]["IamInstanceProfile"]["Name"] for name, n in cfg["available_node_types"].items()}
    head, worker = profiles[cfg["head_node_type"]], profiles["gpu_worker"]
    assert head != worker, "GPU workers must not run with the head's role"
    # The documented setup gives each profile the role of the same name and these policies.
    text = AWS_YAML.read_text()
    assert "attach fsdd-vae-head autoscaler-policy; attach fsdd-vae-worker worker-deny-policy" in text
    assert (head, worker) == ("fsdd-vae-head", "fsdd-vae-worker")
    worker_statements = _statements("storage-policy", "worker-deny-policy")
    assert not [a for s in worker_statements for a in _as_list(s["Action"]) if not a.startswith("s3:")]
    obj = lambda key: f"arn:aws:s3:::BUCKET/{storage_prefix}/{key}"  # noqa: E731
    for key in (
        "sweep1/tune/experiment_state-2024.json",
        "sweep1/tune/searcher-state.pkl",
        "sweep1/best/PUBLISHED.json",
    ):
        assert not _allowed(worker_statements, "s3:PutObject", obj(key)), key
        assert _allowed(worker_statements, "s3:GetObject", obj(key)), key
    for key in ("sweep1/trials/t1/checkpoint_0001/manifest.json", "features/default-abc/_v1/part-x-0.parquet"):
        assert _allowed(worker_statements, "s3:PutObject", obj(key)), key


def test_the_head_launches_and_terminates_only_this_clusters_workers():
    cluster_name = _aws_config()["cluster_name"]
    statements = _policy("autoscaler-policy")["Statement"]
    for s in statements:
        actions = _as_list(s["Action"])
        if all(a.startswith("ec2:Describe") for a in actions):
            continue  # EC2 cannot scope Describe* calls to resources
        if actions == ["iam:PassRole"] or actions == "iam:PassRole":
            continue
        for a in actions:
            assert a in ("ec2:RunInstances", "ec2:CreateTags", "ec2:TerminateInstances"), a
        if "ec2:TerminateInstances" in actions or s["Sid"] == "AutoscalerLaunchesOnlyTaggedClusterInstances":
            tag = next(iter(s["Condition"]["StringEquals"].items()))
            assert tag[0].endswith("/ray-cluster-name") and tag[1] == cluster_name, s["Sid"]
        elif "ec2:CreateTags" in actions:
            assert s["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    (pass_role,) = [s for s in statements if "iam:PassRole" in _as_list(s["Action"])]
    assert pass_role["Resource"] == "arn:aws:iam::ACCOUNT_ID:role/fsdd-vae-worker", "PassRole of the worker role only"
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert not _allowed(statements, "iam:PassRole", "arn:aws:iam::ACCOUNT_ID:role/fsdd-vae-head")
