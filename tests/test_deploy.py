"""Packaging: the kustomize base, the operator manifests and the Dockerfile agree."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "kustomize" / "base"
MONITORING = DEPLOY / "kustomize" / "monitoring"


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def deployment() -> dict[str, Any]:
    return load(BASE / "deployment.yaml")


def container() -> dict[str, Any]:
    [c] = deployment()["spec"]["template"]["spec"]["containers"]
    return c


def config() -> dict[str, Any]:
    return load(BASE / "config" / "config.yaml")


def mount_of(volume: str) -> PurePosixPath:
    [m] = [m for m in container()["volumeMounts"] if m["name"] == volume]
    return PurePosixPath(m["mountPath"])


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def instruction(name: str) -> list[str]:
    return [args for instr, args in dockerfile() if instr == name]


class TestEveryFileParses:
    @pytest.mark.parametrize(
        "path",
        sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"}),
        ids=lambda p: str(p.relative_to(DEPLOY)),
    )
    def test_every_yaml_file_in_deploy_parses(self, path: Path) -> None:
        docs = list(YAML(typ="safe").load_all(path.read_text()))

        assert docs and all(doc is not None for doc in docs)

    def test_kustomization_files_name_files_that_exist(self) -> None:
        kustomization = load(BASE / "kustomization.yaml")
        named = list(kustomization["resources"])
        named += [f for gen in kustomization["configMapGenerator"] for f in gen["files"]]
        named += [patch["path"] for patch in kustomization["patches"]]

        assert [n for n in named if not (BASE / n).exists()] == []


class TestServiceAndMonitor:
    def test_the_service_exposes_port_8080_named_http_to_the_pods(self) -> None:
        service = load(BASE / "service.yaml")
        pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]

        [port] = service["spec"]["ports"]
        assert (port["name"], port["port"], port["targetPort"]) == ("http", 8080, "http")
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container()["ports"]

    def test_the_service_monitor_selects_the_service_and_its_http_port(self) -> None:
        service = load(BASE / "service.yaml")
        monitor = load(MONITORING / "servicemonitor.yaml")

        assert monitor["kind"] == "ServiceMonitor"
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"

    def test_the_job_label_is_healer_as_the_rules_expect(self) -> None:
        # Without jobLabel, prometheus-operator names the job after the Service.
        monitor = load(MONITORING / "servicemonitor.yaml")
        rules = (DEPLOY / "prometheus" / "healer-rules.yaml").read_text()

        assert "jobLabel" not in monitor["spec"]
        assert load(BASE / "service.yaml")["metadata"]["name"] == "healer"
        assert 'up{job="healer"}' in rules


class TestDeployment:
    def test_one_replica_and_never_two_pods_at_once(self) -> None:
        spec = deployment()["spec"]

        assert spec["replicas"] == 1
        assert spec["strategy"]["type"] == "Recreate"

    def test_probes_use_healthz_and_readyz_on_the_http_port(self) -> None:
        c = container()

        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    def test_resources_have_requests_and_limits(self) -> None:
        resources = container()["resources"]

        assert set(resources["requests"]) == {"cpu", "memory"}
        assert set(resources["limits"]) >= {"memory"}

    def test_the_pod_runs_as_the_images_non_root_user(self) -> None:
        pod = deployment()["spec"]["template"]["spec"]["securityContext"]

        assert pod["runAsNonRoot"] is True
        assert f"{pod['runAsUser']}:{pod['runAsGroup']}" in instruction("USER")
        assert container()["securityContext"]["readOnlyRootFilesystem"] is True

    def test_every_mount_has_a_volume(self) -> None:
        volumes = {v["name"] for v in deployment()["spec"]["template"]["spec"]["volumes"]}

        assert {m["name"] for m in container()["volumeMounts"]} <= volumes

    def test_the_policies_patch_adds_to_the_config_volume(self) -> None:
        [first, *_] = deployment()["spec"]["template"]["spec"]["volumes"]
        [op] = load(BASE / "policies" / "volume-patch.yaml") or [None]
        policies = sorted(p.name for p in (REPO / "policies").glob("*.yaml"))

        assert first["name"] == "config" and "projected" in first
        if policies:
            assert op["path"] == "/spec/template/spec/volumes/0/projected/sources/-"
            items = op["value"]["configMap"]["items"]
            assert [i["path"] for i in items] == [f"policies/{p}" for p in policies]


class TestConfigMatchesTheMounts:
    def test_the_config_file_is_where_the_entrypoint_reads_it(self) -> None:
        assert mount_of("config") / "config.yaml" == PurePosixPath("/etc/healer/config.yaml")
        assert "/etc/healer/config.yaml" in " ".join(instruction("CMD"))

    def test_policies_and_apps_are_inside_the_config_volume(self) -> None:
        cfg = config()

        assert PurePosixPath(cfg["policy_dir"]) == mount_of("config") / "policies"
        assert PurePosixPath(cfg["enrollment"]["apps_file"]) == mount_of("config") / "apps.txt"

    def test_token_files_are_keys_of_the_mounted_secret(self) -> None:
        cfg = config()
        secret = load(BASE / "secret.yaml")
        files = [cfg["cloudpilot"]["token_file"], cfg["http"]["admin_token_file"]]

        for file in map(PurePosixPath, files):
            assert file.parent == mount_of("tokens")
            assert file.name in secret["stringData"]

    def test_the_ledger_is_on_the_persistent_volume(self) -> None:
        store = config()["store_url"]

        assert store.startswith("sqlite:///")
        assert PurePosixPath(store.removeprefix("sqlite:///")).parent == mount_of("data")

    def test_healer_listens_on_the_container_port_on_all_interfaces(self) -> None:
        host, port = config()["http"]["listen"].rsplit(":", 1)

        assert (host, int(port)) == ("0.0.0.0", 8080)

    def test_the_example_points_at_no_private_network_address(self) -> None:
        assert "://10." not in (BASE / "config" / "config.yaml").read_text()


class TestKustomizeBuild:
    @pytest.fixture
    def kubectl(self) -> str:
        path = shutil.which("kubectl")
        if path is None:
            # Not part of CI's install: the structural tests above stand in for it.
            pytest.skip("kubectl is not installed; kustomize build not checked")
        return path

    @pytest.mark.parametrize("directory", [BASE, MONITORING], ids=["base", "monitoring"])
    def test_kustomize_builds(self, kubectl: str, directory: Path) -> None:
        result = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
        )

        assert result.returncode == 0, result.stderr

    def test_the_built_deployment_mounts_the_generated_config_maps(self, kubectl: str) -> None:
        result = subprocess.run(
            [kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=60
        )
        docs = list(YAML(typ="safe").load_all(result.stdout))

        maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
        [dep] = [d for d in docs if d["kind"] == "Deployment"]
        [volume] = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
        sources = {s["configMap"]["name"] for s in volume["projected"]["sources"]}
        assert sources <= maps
        assert any(name.startswith("healer-config-") for name in sources)


class TestDockerfile:
    def test_the_base_is_python_3_11_slim(self) -> None:
        assert instruction("FROM") == ["python:3.11-slim"]

    def test_it_installs_healer_with_pip_from_the_source_tree(self) -> None:
        assert any("pip install ." in run for run in instruction("RUN"))

    def test_it_runs_as_a_non_root_user(self) -> None:
        [user] = instruction("USER")

        assert user.split(":")[0] not in {"root", "0"}

    def test_the_healthcheck_asks_healthz(self) -> None:
        [check] = instruction("HEALTHCHECK")

        assert "/healthz" in check and "127.0.0.1:8080" in check

    def test_the_default_command_is_healer_run_with_the_mounted_config(self) -> None:
        [entrypoint] = instruction("ENTRYPOINT")
        [cmd] = instruction("CMD")

        command = shlex.split(entrypoint.strip("[]").replace(",", " "))
        command += shlex.split(cmd.strip("[]").replace(",", " "))
        assert command == ["healer", "run", "--config", "/etc/healer/config.yaml"]

    def test_everything_copied_exists_and_is_not_ignored(self) -> None:
        ignored = {
            line.strip()
            for line in (REPO / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
        sources = [s for args in instruction("COPY") for s in args.split()[:-1]]

        assert sources
        assert [s for s in sources if not (REPO / s).exists()] == []
        assert {s.rstrip("/") for s in sources} & ignored == set()
        assert {".git", ".venv"} <= ignored
