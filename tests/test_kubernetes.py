"""The Kubernetes manifests under deploy/kubernetes: the base and the production overlay,
rendered as kustomize renders them, are valid against the schemas of a current Kubernetes
release (kubernetes-validate, strict: unknown fields fail), run only real `realname`
subcommands, and hold the production rules (probes, requests and limits, non-root read-only
containers, no secret values, data stores reachable only from the service's own pods).

No kustomize binary runs here: :func:`render` implements the subset of kustomize the
manifests use (``resources``, ``namespace``, ``images``, and ``patches`` as RFC 6902 JSON
patches with a target) and refuses any other field, so a manifest cannot quietly depend on
something this test does not render."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from app.cli import build_parser
from app.main import create_app
from app.settings import Settings
from tests.conftest import TEST_BLIND_KEYS, TEST_SECRET
from tests.support import REPO_ROOT
from tests.test_serve_role import routed

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
PRODUCTION = KUBERNETES / "overlays" / "production"
#: The Kubernetes release whose schemas the manifests must meet (the newest the validator has).
KUBERNETES_VERSION = kubernetes_validate.latest_version()
_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
_CLUSTER_SCOPED = {"Namespace"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _matches(doc: dict[str, Any], target: dict[str, str]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    wanted = {"kind": doc["kind"], "name": doc["metadata"]["name"], "group": group}
    wanted["version"] = version
    return all(wanted.get(key) == value for key, value in target.items())


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kustomize build directory`` would print (for the subset above)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZATION_FIELDS
    assert not unknown, f"{directory}: kustomization fields this test cannot render: {unknown}"
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        docs.extend(render(path) if path.is_dir() else _documents(path))
    for patch in kustomization.get("patches", []):
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        targets = [d for d in docs if _matches(d, patch["target"])]
        assert len(targets) == 1, f"patch {patch['path']} matches {len(targets)} objects"
        index = docs.index(targets[0])
        docs[index] = jsonpatch.apply_patch(targets[0], operations)
    for image in kustomization.get("images", []):
        for container in (c for d in docs for c in containers(d)):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in _CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return copy.deepcopy(docs)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "Job"):
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    return None


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]] if spec else []


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return found


RENDERED = {"base": BASE, "production": PRODUCTION}


@pytest.fixture(params=sorted(RENDERED))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(RENDERED[request.param])


def test_every_object_is_valid_against_the_kubernetes_schemas(
    rendered: list[dict[str, Any]],
) -> None:
    """Each rendered object validates strictly against the current release's schemas."""
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)

    assert len(rendered) >= 10


def test_an_invalid_object_is_caught_by_the_validator() -> None:
    """The validator used here does refuse a malformed manifest (a misspelt field)."""
    api = copy.deepcopy(one(render(BASE), "Deployment", "realname-api"))
    api["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSION, strict=True)


def test_every_command_is_a_real_realname_subcommand(rendered: list[dict[str, Any]]) -> None:
    """Each container's command and args parse as a `realname` command line."""
    commands = [c["command"] + c.get("args", []) for d in rendered for c in containers(d)]

    for command in commands:
        assert command[0] == "realname"
        build_parser().parse_args(command[1:])  # exits (fails the test) on an unknown one
    assert {c[1] for c in commands} == {"serve", "worker", "migrate"}


def test_every_container_has_requests_limits_and_a_locked_down_security_context(
    rendered: list[dict[str, Any]],
) -> None:
    """Requests and limits for CPU and memory; non-root, read-only root, no privileges."""
    for doc in rendered:
        spec = pod_spec(doc)
        if spec is None:
            continue
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in containers(doc):
            assert set(container["resources"]["requests"]) == {"cpu", "memory"}
            assert set(container["resources"]["limits"]) == {"cpu", "memory"}
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]


def test_the_api_has_probes_an_autoscaler_and_a_disruption_budget(
    rendered: list[dict[str, Any]],
) -> None:
    """Readiness on /readyz, liveness on /healthz; the HPA, PDB and Service select the API."""
    api = one(rendered, "Deployment", "realname-api")
    [container] = containers(api)
    labels = api["spec"]["template"]["metadata"]["labels"]
    hpa = one(rendered, "HorizontalPodAutoscaler", "realname-api")
    pdb = one(rendered, "PodDisruptionBudget", "realname-api")
    service = one(rendered, "Service", "realname-api")

    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "realname-api"
    assert hpa["spec"]["minReplicas"] >= 2
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_token_path_has_pods_probes_an_autoscaler_and_a_disruption_budget_of_its_own(
    rendered: list[dict[str, Any]],
) -> None:
    """realname-tokens runs `serve --role tokens` with the API's probes; its Service, HPA and
    PDB select its pods and not the API's (nor the API's theirs); it takes traffic on its port."""
    tokens = one(rendered, "Deployment", "realname-tokens")
    api = one(rendered, "Deployment", "realname-api")
    [container] = containers(tokens)
    [api_container] = containers(api)
    labels = tokens["spec"]["template"]["metadata"]["labels"]
    api_labels = api["spec"]["template"]["metadata"]["labels"]
    args = build_parser().parse_args(container["command"][1:] + container["args"])
    policy = one(rendered, "NetworkPolicy", "realname-tokens")

    assert (args.command, args.role, args.workers) == ("serve", "tokens", 1)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe] == api_container[probe], probe
    assert one(rendered, "HorizontalPodAutoscaler", "realname-tokens")["spec"][
        "scaleTargetRef"
    ] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "realname-tokens"}
    for selector in (
        one(rendered, "Service", "realname-tokens")["spec"]["selector"],
        one(rendered, "PodDisruptionBudget", "realname-tokens")["spec"]["selector"]["matchLabels"],
        policy["spec"]["podSelector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
        assert not selector.items() <= api_labels.items()
    assert not one(rendered, "Service", "realname-api")["spec"]["selector"].items() <= (
        labels.items()
    )
    assert [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]] == [
        container["ports"][0]["containerPort"]
    ]


def ingress_backend(ingress: dict[str, Any], path: str) -> str:
    """The Service an Ingress sends ``path`` to: the longest ``Prefix`` path that matches it
    element by element, as Kubernetes matches (``/v1/tokens/`` matches ``/v1/tokens/revoke``,
    not ``/v1/tokensx``)."""
    [rule] = ingress["spec"]["rules"]
    parts = [p for p in path.split("/") if p]
    best: tuple[int, str] | None = None
    for candidate in rule["http"]["paths"]:
        assert candidate["pathType"] == "Prefix"
        prefix = [p for p in candidate["path"].split("/") if p]
        if parts[: len(prefix)] == prefix and (best is None or len(prefix) > best[0]):
            best = (len(prefix), candidate["backend"]["service"]["name"])
    assert best is not None, path
    return best[1]


def test_the_ingress_sends_the_token_path_to_the_tokens_pods_and_the_rest_to_the_api(
    rendered: list[dict[str, Any]],
) -> None:
    """Every path a tokens process routes (but its probes and metrics, read from the pods)
    goes to realname-tokens, every other path of the whole API to realname-api, each through
    a Service port that exists."""
    ingress = one(rendered, "Ingress", "realname")
    schema_only = Settings(
        env="test",
        database_url="sqlite://",  # never connected: no runtime is built for these apps
        secret_key=TEST_SECRET,
        blind_index_keys=TEST_BLIND_KEYS,
        _env_file=None,
    )
    pods_only = {"/healthz", "/readyz", "/metrics"}
    token_path = {p for _, p in routed(create_app(schema_only, role="tokens"))} - pods_only
    whole = {p for _, p in routed(create_app(schema_only))} - pods_only

    assert token_path == {
        "/v1/tokens/introspect",
        "/v1/tokens/revoke",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    }
    for path in whole:
        expected = "realname-tokens" if path in token_path else "realname-api"
        assert ingress_backend(ingress, path) == expected, path
    for candidate in ingress["spec"]["rules"][0]["http"]["paths"]:
        backend = candidate["backend"]["service"]
        ports = one(rendered, "Service", backend["name"])["spec"]["ports"]
        assert backend["port"]["name"] in {p["name"] for p in ports}


def test_a_worker_and_a_migration_job_run_beside_the_api(rendered: list[dict[str, Any]]) -> None:
    """The worker is its own Deployment and API pods do not run the in-process worker."""
    config = one(rendered, "ConfigMap", "realname-config")["data"]

    assert containers(one(rendered, "Deployment", "realname-worker"))[0]["command"][1] == "worker"
    assert containers(one(rendered, "Job", "realname-migrate"))[0]["command"][1] == "migrate"
    assert config["REALNAME_RUN_WORKER"] == "false"
    assert config["REALNAME_ENV"] == "prod"


def test_secrets_are_referenced_never_kept_in_the_repository(
    rendered: list[dict[str, Any]],
) -> None:
    """No Secret object, and every container reads secrets from the realname-secrets Secret."""
    secret_settings = {"REALNAME_SECRET_KEY", "REALNAME_BLIND_INDEX_KEYS", "REALNAME_DATABASE_URL"}

    assert by_kind(rendered, "Secret") == []
    for doc in rendered:
        for container in containers(doc):
            assert {"secretRef": {"name": "realname-secrets"}} in container["envFrom"]
            assert not secret_settings & {e["name"] for e in container.get("env", [])}
    config = one(rendered, "ConfigMap", "realname-config")["data"]
    assert not secret_settings & set(config)


def test_only_the_api_tokens_worker_and_migration_reach_postgresql_and_redis(
    rendered: list[dict[str, Any]],
) -> None:
    """The data stores' NetworkPolicy admits only the service's own pods, on 5432 and 6379."""
    policy = one(rendered, "NetworkPolicy", "realname-datastores")
    selected = policy["spec"]["podSelector"]["matchExpressions"][0]
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    components = next(
        e["values"]
        for e in source["podSelector"]["matchExpressions"]
        if e["key"] == "app.kubernetes.io/component"
    )

    assert set(selected["values"]) == {"postgresql", "redis"}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert set(components) == {"api", "tokens", "worker", "migrate"}
    assert {p["port"] for p in rule["ports"]} == {5432, 6379}


def test_the_production_overlay_sets_namespace_image_scale_and_outbound_urls() -> None:
    """Everything lands in the restricted namespace, on the released image, with more API and
    tokens replicas, the Ingress's host (with TLS) as the public URL, and https registry and
    gateway URLs that prod mode accepts."""
    from app.settings_rules import url_problem

    docs = render(PRODUCTION)
    namespace = one(docs, "Namespace", "realname")
    config = one(docs, "ConfigMap", "realname-config")["data"]
    images = {c["image"] for d in docs for c in containers(d)}

    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        "realname"
    }
    assert images == {"registry.example.com/realname:0.1.0"}
    assert one(docs, "HorizontalPodAutoscaler", "realname-api")["spec"]["minReplicas"] == 3
    assert one(docs, "HorizontalPodAutoscaler", "realname-tokens")["spec"]["minReplicas"] == 3
    ingress = one(docs, "Ingress", "realname")["spec"]
    assert [rule["host"] for rule in ingress["rules"]] == ingress["tls"][0]["hosts"]
    assert config["REALNAME_PUBLIC_URL"] == f"https://{ingress['rules'][0]['host']}"
    for name in ("REALNAME_REGISTRY_URL", "REALNAME_SMS_GATEWAY_URL"):
        assert url_problem(name, config[name], []) is None
    assert config["REALNAME_TRUSTED_PROXIES"]
