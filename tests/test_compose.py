"""docker-compose.yml starts as shipped. No container engine runs here, so the test does the
next best thing: it reads the file, interpolates it as compose does from `.env.example` plus
`realname keys generate`, and runs each service's command with its environment (service host
names mapped to 127.0.0.1, listening ports to free ones, the database to a scratch PostgreSQL
database and Redis to the test's) against the local PostgreSQL and Redis. The API must answer
/readyz 200 and a live verification must reach `verified` through the mock registry, the
worker and the sink standing in for the SMS gateway."""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dotenv import dotenv_values

from app.cli import build_parser
from tests.support import REALNAME, REPO_ROOT, free_port, new_person, run_cli, scratch_postgres
from tests.test_scale_out import REDIS_URL

COMPOSE = REPO_ROOT / "docker-compose.yml"
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
#: Services the machine provides itself (the local PostgreSQL and Redis).
PROVIDED = {"postgres", "redis"}


class MissingVariable(Exception):
    """A `${VAR:?message}` whose variable is unset or empty: compose refuses to start."""


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's interpolation of `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:?error}`, `${VAR?error}` and `$$`, applied to every string in ``value``."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, word = match.group(1), match.group(2), match.group(3) or ""
        current = variables.get(name)
        missing = current is None or (current == "" and operator in (":-", ":?"))
        if operator in (":?", "?") and missing:
            raise MissingVariable(f"{name}: {word}")
        if operator in (":-", "-") and missing:
            return word
        return current or ""

    return _VARIABLE.sub(one, value)


def compose_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def generated_keys() -> dict[str, str]:
    out = subprocess.run(
        [REALNAME, "keys", "generate"], capture_output=True, text=True, check=True, timeout=60
    )
    return {k: v for k, v in dotenv_values(stream=io.StringIO(out.stdout)).items() if v}


def compose_variables() -> dict[str, str]:
    """What compose would interpolate from: `.env.example` plus `realname keys generate`."""
    example = {k: v or "" for k, v in dotenv_values(REPO_ROOT / ".env.example").items()}
    return {**example, **generated_keys()}


def listening_port(command: list[str]) -> int | None:
    return int(command[command.index("--port") + 1]) if "--port" in command else None


def test_every_service_runs_a_real_realname_subcommand() -> None:
    """Each command of a service built from this image parses as a `realname` subcommand."""
    services = interpolate(compose_file()["services"], compose_variables())
    ours = {name: s for name, s in services.items() if "build" in s}

    for service in ours.values():
        command = service["command"]
        assert command[0] == "realname"
        build_parser().parse_args(command[1:])  # exits (fails the test) on an unknown one
    assert set(ours) == {"migrate", "api", "tokens", "worker", "mock-registry", "sink"}


def test_the_topology_is_production_shaped() -> None:
    """Health-checked PostgreSQL and Redis, a one-shot migration the API and worker wait for,
    no in-process worker beside the worker service, staging helpers behind a profile."""
    services = compose_file()["services"]

    assert {"healthcheck"} <= set(services["postgres"])
    assert {"healthcheck"} <= set(services["redis"])
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "tokens", "worker"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
        assert services[name]["environment"]["REALNAME_RUN_WORKER"] == "false"
    assert services["api"]["command"][services["api"]["command"].index("--workers") + 1]
    assert services["mock-registry"]["profiles"] == ["staging"]
    assert services["sink"]["profiles"] == ["staging"]


def test_the_token_path_has_a_health_checked_service_of_its_own() -> None:
    """`tokens` runs `realname serve --role tokens` from the API's image and environment, on a
    port of its own that it publishes and whose /readyz its health check reads."""
    services = interpolate(compose_file()["services"], compose_variables())
    api, tokens = services["api"], services["tokens"]
    args = build_parser().parse_args(tokens["command"][1:])
    port = listening_port(tokens["command"])

    assert (args.command, args.role, args.host) == ("serve", "tokens", "0.0.0.0")  # noqa: S104
    assert build_parser().parse_args(api["command"][1:]).role is None  # the whole API
    assert (tokens["image"], tokens["environment"]) == (api["image"], api["environment"])
    assert port is not None
    assert port != listening_port(api["command"])
    assert tokens["ports"] == [f"{port}:{port}"]
    assert tokens["healthcheck"]["test"][:3] == api["healthcheck"]["test"][:3]
    assert f"http://127.0.0.1:{port}/readyz" in tokens["healthcheck"]["test"][-1]
    assert tokens["depends_on"] == api["depends_on"]


def test_images_and_python_dependencies_are_pinned() -> None:
    """Every image names an exact version; the Dockerfile installs from constraints.txt,
    which pins every runtime dependency."""
    images = [s["image"] for s in compose_file()["services"].values()]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    pins = dict(
        line.split("==", 1)
        for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    runtime_deps = re.findall(
        r'^    "([A-Za-z0-9_.-]+)', pyproject.split("dependencies = [")[1].split("]")[0], re.M
    )

    assert all(re.search(r":[0-9]+\.[0-9]+", image) for image in images), images
    assert re.search(r"^FROM python:3\.11\.[0-9]+-", dockerfile, re.M)
    assert "pip install -c constraints.txt" in dockerfile
    normalised = {re.sub(r"[-_.]+", "-", name).lower() for name in pins}
    assert {re.sub(r"[-_.]+", "-", d).lower() for d in runtime_deps} <= normalised


@pytest.mark.parametrize(
    "secret",
    [
        "POSTGRES_PASSWORD",
        "REALNAME_SECRET_KEY",
        "REALNAME_BLIND_INDEX_KEYS",
        "REALNAME_METRICS_TOKEN",
        "REALNAME_SMS_GATEWAY_SECRET",
        "REALNAME_REGISTRY_TOKEN",
    ],
)
def test_compose_refuses_to_start_without_each_secret(secret: str) -> None:
    """Without a secret (as in .env.example alone) interpolation stops, naming it."""
    variables = compose_variables()
    variables.pop(secret)

    with pytest.raises(MissingVariable, match=secret):
        interpolate(compose_file()["services"], variables)


@contextmanager
def run_service(
    name: str, command: list[str], env: dict[str, str], workdir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log = (workdir / f"{name}.log").open("wb")
    base = {k: v for k, v in os.environ.items() if not k.startswith("REALNAME_")}
    proc = subprocess.Popen(
        [REALNAME, *command[1:]],
        env={**base, "PYTHONDONTWRITEBYTECODE": "1", **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,  # no .env here, as in the image
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, within: float = 60) -> int:
    deadline = time.monotonic() + within
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the service exited: {log.read_text()[-3000:]}")
        try:
            return httpx.get(url, timeout=2).status_code
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer: {log.read_text()[-3000:]}") from None
            time.sleep(0.2)


@pytest.fixture(scope="module")
def compose_database(settings: Any) -> Iterator[str]:
    with scratch_postgres(settings, "realname_scale") as url:
        yield url


@pytest.mark.e2e
def test_compose_services_serve_and_a_live_verification_reaches_verified(
    settings: Any, compose_database: str, tmp_path: Path
) -> None:
    """migrate, api, tokens, worker, mock-registry and sink, run as compose would run them,
    serve: /readyz is 200, a live L2 verification reaches `verified`, and its token, issued by
    the API, is active when introspected through the tokens service."""
    services = interpolate(compose_file()["services"], compose_variables())
    ours = {name: s for name, s in services.items() if name not in PROVIDED}
    ports = {
        name: free_port() for name, s in ours.items() if listening_port(s["command"]) is not None
    }
    declared = {name: listening_port(s["command"]) for name, s in ours.items()}

    def local(value: str) -> str:
        """Map one environment value from the compose network onto this machine."""
        if value.startswith("postgresql://") and "@postgres:" in value:
            return compose_database
        if value.startswith("redis://redis:"):
            return REDIS_URL
        for name, port in ports.items():
            value = value.replace(f"//{name}:{declared[name]}", f"//127.0.0.1:{port}")
        return value

    def command_of(name: str) -> list[str]:
        command = [("127.0.0.1" if part == "0.0.0.0" else part) for part in ours[name]["command"]]  # noqa: S104
        if name in ports:
            command[command.index("--port") + 1] = str(ports[name])
        return command

    def env_of(name: str) -> dict[str, str]:
        return {k: local(str(v)) for k, v in (ours[name].get("environment") or {}).items()}

    migrated = subprocess.run(
        [REALNAME, *command_of("migrate")[1:]],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("REALNAME_")},
             **env_of("migrate")},
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    created = run_cli(
        settings, "clients", "create", "--name", "compose", "--mode", "live", "--level", "L2",
        **env_of("migrate"),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    api_key = created.stdout.split('"api_key": "')[1].split('"')[0]

    with ExitStack() as stack:
        procs = {
            name: stack.enter_context(run_service(name, command_of(name), env_of(name), tmp_path))
            for name in ("mock-registry", "sink", "worker", "api", "tokens")
        }
        for name in ("mock-registry", "sink"):
            url = f"http://127.0.0.1:{ports[name]}/healthz"
            assert wait_http(url, procs[name], tmp_path / f"{name}.log") == 200
        api = f"http://127.0.0.1:{ports['api']}"
        ready = wait_http(api + "/readyz", procs["api"], tmp_path / "api.log")
        tokens = f"http://127.0.0.1:{ports['tokens']}"
        tokens_ready = wait_http(tokens + "/readyz", procs["tokens"], tmp_path / "tokens.log")

        with httpx.Client(
            base_url=api, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        ) as http:
            created_v = http.post("/v1/verifications", json=new_person())
            assert created_v.status_code == 201, created_v.text
            vid = created_v.json()["id"]
            code = sms_code(f"http://127.0.0.1:{ports['sink']}", procs["worker"], tmp_path)
            submitted = http.post(f"/v1/verifications/{vid}/sms-code", json={"code": code})
            issued = http.post(f"/v1/verifications/{vid}/tokens")
            assert issued.status_code == 201, issued.text
            token = issued.json()["access_token"]
            introspected = http.post(tokens + "/v1/tokens/introspect", json={"token": token})
            elsewhere = http.get(tokens + f"/v1/verifications/{vid}")
        assert procs["worker"].poll() is None

    assert (ready, tokens_ready) == (200, 200)
    assert (submitted.status_code, submitted.json()["status"]) == (200, "verified")
    assert (introspected.status_code, introspected.json()["active"]) == (200, True)
    assert elsewhere.status_code == 404


def sms_code(sink: str, worker: subprocess.Popen[bytes], logs: Path) -> str:
    """The code of the SMS the worker sent through the gateway (the sink), once it arrives."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sent = httpx.get(sink + "/messages", params={"path": "/sms"}, timeout=5).json()
        if sent:
            headers = sent[0]["headers"]
            assert {"x-realname-signature", "webhook-signature"} & set(headers)  # signed
            return str(sent[0]["body"]["params"]["code"])
        assert worker.poll() is None, (logs / "worker.log").read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError("no SMS reached the sink: " + (logs / "worker.log").read_text()[-3000:])
