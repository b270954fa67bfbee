"""Deployment files agree with the code: the container's command is a valid `tileserver` command line;
docker-compose.yml (nginx, three replicas, Redis, MinIO), deploy/nginx/tileserver.conf and the Kubernetes
manifests in deploy/k8s name real settings with valid values, real routes for their probes and health
checks, the same ports and service names on both ends of every connection, and one retry policy; and the
nginx file, rewritten for loopback as tests/cluster.py runs it, is accepted by nginx. (No Docker engine or
Kubernetes cluster runs on the project's machines, so images are not built and manifests not applied here.)"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tileserver.cli import build_parser
from tileserver.settings import Settings

from .cluster import loopback_config, upstream_servers
from .stores import nginx_executable

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
NGINX_CONF = ROOT / "deploy" / "nginx" / "tileserver.conf"
SHARED = ("cache_url", "cache_api_token")  # the shared cache and its API token
REPLICAS = ("tileserver-1", "tileserver-2", "tileserver-3")
PORT = 8000
RETRY = ("error", "timeout", "http_502", "http_503", "http_504")
STAND_IN = "stand-in-for-a-secret-0123456789"  # what the files leave to the environment (tokens: >= 16 characters)


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest(kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def interpolated(value: str) -> str:
    """A compose value with its `${VAR:?message}` / `${VAR:-default}` references given a stand-in."""
    return re.sub(r"\$\{[A-Z0-9_]+(?::[?-][^}]*)?\}", STAND_IN, str(value))


def nginx_directive(name: str, text: str | None = None) -> list[str]:
    """The arguments of every `name ...;` line of the nginx file (comments left out)."""
    body = "\n".join(line.split("#", 1)[0] for line in (text or NGINX_CONF.read_text()).splitlines())
    return [m[1].strip() for m in re.finditer(rf"^\s*{name}\s+([^;]*);", body, re.M)]


def replica_env(name: str = "tileserver-1") -> dict[str, str]:
    return {k: interpolated(v) for k, v in compose()["services"][name]["environment"].items()}


def k8s_env() -> dict[str, str]:
    """What a replica pod sees: the ConfigMap's data, and the Secret's keys (with stand-in values)."""
    pod = manifest("Deployment", "tileserver")["spec"]["template"]["spec"]["containers"][0]
    secrets = {e["name"]: STAND_IN for e in pod["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    return {**manifest("ConfigMap", "tileserver-settings")["data"], **secrets}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a process with exactly `env`'s TILESERVER_ variables builds."""
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"TILESERVER_{name.upper()}", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return Settings()


def every_setting_name() -> Iterator[tuple[str, str]]:
    """(file, TILESERVER_ variable) for every variable compose and the manifests set."""
    for name in REPLICAS:
        for var in compose()["services"][name]["environment"]:
            if var.startswith("TILESERVER_"):
                yield "docker-compose.yml", var
    for var in k8s_env():
        yield "deploy/k8s", var


# -------------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_command_parses() -> None:
    text = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M)[1])  # type: ignore[index]
    assert cmd[0] == "tileserver"
    args = build_parser().parse_args(cmd[1:])
    assert (args.command, args.root, args.host, args.port, args.workers) == ("serve", "/images", "0.0.0.0", PORT, 2)


# -------------------------------------------------------------------------------- the settings named
def test_compose_and_manifests_name_only_real_settings() -> None:
    names = {(where, var.removeprefix("TILESERVER_").lower()) for where, var in every_setting_name()}
    assert {n for _, n in names} >= set(SHARED), "compose and the manifests configure the shared cache"
    assert [(where, n) for where, n in names if n not in Settings.model_fields] == []


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_their_settings_are_valid(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if where == "compose":  # the image root is the command's
        root = compose()["services"]["tileserver-1"]["command"][2]
        env = {**replica_env(), "TILESERVER_ROOT": root}
    else:
        env = k8s_env()
    settings = settings_from(env, monkeypatch)
    assert settings.root_url == "s3://images/"
    assert str(settings.store_endpoint).startswith("http://")
    assert settings.store_secret_access_key is not None and settings.cache_api_token is not None
    assert str(settings.cache_url).startswith("redis://")


def test_the_replicas_of_compose_are_one_definition() -> None:
    services = compose()["services"]
    first = services[REPLICAS[0]]
    assert all(services[name] == first for name in REPLICAS)


def test_secrets_come_from_outside_the_files() -> None:
    for key, value in replica_env().items():
        if re.search("SECRET|TOKEN|PASSWORD", key):
            assert value == STAND_IN, f"compose: {key} must come from the environment"
    configmap = manifest("ConfigMap", "tileserver-settings")["data"]
    assert not [k for k in configmap if re.search("SECRET|TOKEN|PASSWORD|ACCESS_KEY", k)]
    pod = manifest("Deployment", "tileserver")["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in pod["env"]}
    assert refs == {"TILESERVER_STORE_ACCESS_KEY_ID": "tileserver-secrets",
                    "TILESERVER_STORE_SECRET_ACCESS_KEY": "tileserver-secrets",
                    "TILESERVER_CACHE_API_TOKEN": "tileserver-secrets"}


# ------------------------------------------------------------------------------- commands and routes
def test_the_replicas_commands_parse() -> None:
    cmd = compose()["services"]["tileserver-1"]["command"]
    args = build_parser().parse_args(cmd[1:])
    assert (cmd[0], args.command, args.host, args.port) == ("tileserver", "serve", "0.0.0.0", PORT)
    assert Settings(root=args.root).root_url == "s3://images/"
    pod = manifest("Deployment", "tileserver")["spec"]["template"]["spec"]["containers"][0]
    k8s = build_parser().parse_args(pod["args"][1:])
    assert (pod["args"][0], k8s.command, k8s.root, k8s.host) == ("tileserver", "serve", None, "0.0.0.0")
    assert [p["containerPort"] for p in pod["ports"] if p["name"] == "http"] == [k8s.port]


def probe_paths() -> list[str]:
    check = " ".join(compose()["services"]["tileserver-1"]["healthcheck"]["test"])
    pod = manifest("Deployment", "tileserver")["spec"]["template"]["spec"]["containers"][0]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)'", check)
    assert url and int(url[1]) == PORT
    paths = [url[2]] + [pod[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert all(pod[p]["httpGet"]["port"] == "http" for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    return paths


def test_the_probes_are_the_health_routes() -> None:
    pod = manifest("Deployment", "tileserver")["spec"]["template"]["spec"]["containers"][0]
    assert pod["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert pod["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert probe_paths()[0] == "/health/ready"


@pytest.mark.parametrize("path", sorted(set(probe_paths())))
async def test_each_probe_answers(path: str, client: httpx.AsyncClient) -> None:
    r = await client.get(path)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_a_pod_stops_within_its_grace_period() -> None:
    spec = manifest("Deployment", "tileserver")["spec"]["template"]["spec"]
    pause = int(spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    shutdown = int(manifest("ConfigMap", "tileserver-settings")["data"]["TILESERVER_SHUTDOWN_TIMEOUT"])
    assert pause + shutdown < spec["terminationGracePeriodSeconds"]


# ------------------------------------------------------------------------------ ports and addresses
def test_nginx_sends_to_the_compose_replicas_on_their_port() -> None:
    services = compose()["services"]
    assert [a for a, _ in upstream_servers(NGINX_CONF.read_text())] == [f"{n}:{PORT}" for n in REPLICAS]
    assert nginx_directive("listen") == ["80"]
    assert services["nginx"]["ports"] == [f"127.0.0.1:{PORT}:80"]
    assert services["nginx"]["volumes"] == ["./deploy/nginx/tileserver.conf:/etc/nginx/conf.d/default.conf:ro"]
    assert set(services["nginx"]["depends_on"]) == set(REPLICAS)


def test_the_replicas_trust_nginx_only() -> None:
    nginx = compose()["services"]["nginx"]["networks"]["tiles"]["ipv4_address"]
    subnet = compose()["networks"]["tiles"]["ipam"]["config"][0]["subnet"]
    assert replica_env()["TILESERVER_TRUSTED_PROXIES"] == nginx
    import ipaddress

    assert ipaddress.ip_address(nginx) in ipaddress.ip_network(subnet)


def test_the_replicas_reach_the_store_and_the_cache_by_service_name() -> None:
    services, env = compose()["services"], replica_env()
    assert env["TILESERVER_STORE_ENDPOINT"] == "http://s3:9000" and "s3" in services
    assert env["TILESERVER_CACHE_URL"] == "redis://redis:6379/0" and "redis" in services
    assert set(services["tileserver-1"]["depends_on"]) == {"redis", "s3-init"}
    configmap = manifest("ConfigMap", "tileserver-settings")["data"]
    redis = manifest("Service", "tileserver-redis")["spec"]["ports"][0]["port"]
    assert configmap["TILESERVER_CACHE_URL"] == f"redis://tileserver-redis:{redis}/0"


def test_redis_evicts_entries_and_keeps_the_purge_generations() -> None:
    """The shared cache's entries have a TTL and its purge generations none: volatile-lru evicts the first."""
    pod = manifest("Deployment", "tileserver-redis")["spec"]["template"]["spec"]["containers"][0]
    for args in (compose()["services"]["redis"]["command"], pod["args"]):
        assert args[0] == "redis-server" and args[args.index("--maxmemory-policy") + 1] == "volatile-lru"
        assert args[args.index("--save") + 1] == "" and "--maxmemory" in args


def test_service_ingress_autoscaler_and_budget_point_at_the_deployment() -> None:
    deployment = manifest("Deployment", "tileserver")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = manifest("Service", "tileserver")
    assert service["spec"]["selector"] == labels == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    backend = manifest("Ingress", "tileserver")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "tileserver", "port": {"name": "http"}}
    target = manifest("HorizontalPodAutoscaler", "tileserver")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "tileserver")
    assert manifest("PodDisruptionBudget", "tileserver")["spec"]["selector"]["matchLabels"] == labels
    redis = manifest("Deployment", "tileserver-redis")["spec"]["template"]["metadata"]["labels"]
    assert manifest("Service", "tileserver-redis")["spec"]["selector"] == redis


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


# ---------------------------------------------------------------------------------- the retry policy
def test_nginx_retries_idempotent_requests_on_the_next_replica() -> None:
    assert nginx_directive("proxy_next_upstream") == [" ".join(RETRY)]
    assert 2 <= int(nginx_directive("proxy_next_upstream_tries")[0]) <= 3
    assert nginx_directive("proxy_http_version") == ["1.1"] and nginx_directive("keepalive")
    assert 'Connection ""' in nginx_directive("proxy_set_header")


def test_nginx_timeouts_fit_the_replicas() -> None:
    defaults = Settings()
    seconds = {d: float(nginx_directive(d)[0].rstrip("s")) for d in ("proxy_read_timeout", "keepalive_timeout")}
    assert seconds["proxy_read_timeout"] > defaults.admission_deadline  # a replica answers 503 first
    assert seconds["keepalive_timeout"] < defaults.keep_alive_timeout  # nginx closes idle connections first
    assert nginx_directive("client_max_body_size") == [f"{defaults.max_body_bytes // 1024}k"]


def test_the_ingress_has_the_retry_policy_of_the_nginx_file() -> None:
    notes = manifest("Ingress", "tileserver")["metadata"]["annotations"]
    ann = {k.removeprefix("nginx.ingress.kubernetes.io/"): v for k, v in notes.items()}
    assert ann["proxy-next-upstream"] == nginx_directive("proxy_next_upstream")[0]
    assert ann["proxy-next-upstream-tries"] == nginx_directive("proxy_next_upstream_tries")[0]
    for name in ("proxy-next-upstream-timeout", "proxy-connect-timeout", "proxy-read-timeout", "proxy-send-timeout"):
        assert ann[name] + "s" == nginx_directive(name.replace("-", "_"))[0], name
    assert ann["proxy-body-size"] == nginx_directive("client_max_body_size")[0]


# ---------------------------------------------------------------------------------- the nginx file runs
def test_the_loopback_rewrite_changes_only_addresses(tmp_path: Path) -> None:
    text = NGINX_CONF.read_text()
    out = loopback_config(text, 18001, [18002, 18003], tmp_path / "access.log")
    assert [a for a, _ in upstream_servers(out)] == ["127.0.0.1:18002", "127.0.0.1:18003"]
    assert {p for _, p in upstream_servers(out)} == {p for _, p in upstream_servers(text)}
    assert nginx_directive("listen", out) == ["127.0.0.1:18001"]
    kept = [ln for ln in text.splitlines() if not re.match(r"\s*(server \S+:\d+|listen )", ln)]
    assert [ln for ln in out.splitlines() if not re.match(r"\s*(server \S+:\d+|listen )", ln)] == [
        ln.replace("/var/log/nginx/access.log", str(tmp_path / "access.log")) for ln in kept]


def test_nginx_accepts_the_file(tmp_path: Path) -> None:
    from .stores import NGINX_MAIN

    http = loopback_config(NGINX_CONF.read_text(), 18001, [18002, 18003, 18004], tmp_path / "access.log")
    (tmp_path / "nginx.conf").write_text(NGINX_MAIN.format(tmp=tmp_path, http=http))
    r = subprocess.run([nginx_executable(), "-t", "-e", str(tmp_path / "error.log"), "-p", str(tmp_path), "-c",
                        str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
