"""What the manifests promise beyond the schema: probes, ports, secrets, security, the jobs."""

import re

import pytest

from profile_service.runtime.cli import build_parser
from profile_service.runtime.config import Settings
from profile_service.runtime.tracing import FLUSH_SECONDS
from profile_service.storage.health import LIVENESS_SERVICE, SERVICE_NAME
from profile_service.transport.admission import SETTLE_SECONDS
from tests.ops.conftest import (
    Resource,
    container_port,
    containers,
    env_names,
    find,
    manifests,
    plain_env,
    pod_templates,
    selects,
)

# What the server and its jobs must be given (docs/operations.md, configuration reference).
_SERVER_ENV = {
    "DATABASE_URL",
    "JWT_SECRET",
    "JWT_SECRET_PREVIOUS",
    "JWT_AUDIENCE",
    "GRPC_PORT",
    "METRICS_PORT",
    "PURGE_MIN_RETENTION_DAYS",
    "LOG_LEVEL",
    "GRPC_MAX_CONNECTION_AGE_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "WORKERS",
}
_CLIENT_LABEL = "profile-service-client"


def _pod_labels(workload: Resource) -> dict[str, str]:
    spec = workload["spec"]
    template = (
        spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]
    )
    labels: dict[str, str] = template["metadata"]["labels"]
    return labels


def _settings_for(container: Resource) -> Settings:
    # Secrets are stand-ins; every other value is the one the container gets.
    env = {"DATABASE_URL": "postgresql://stand-in", "JWT_SECRET": "s" * 32, **plain_env(container)}
    return Settings.from_env(env)


# --- the server -------------------------------------------------------------------------------


def test_readiness_asks_the_health_service_about_the_api_on_the_grpc_port(
    server: Resource,
) -> None:
    probe = server["readinessProbe"]["grpc"]
    assert probe["port"] == container_port(server, "grpc")
    assert probe["service"] == SERVICE_NAME == "profile.v1.ProfileService"


def test_liveness_and_startup_ask_the_database_independent_liveness_status(
    server: Resource,
) -> None:
    for kind in ("livenessProbe", "startupProbe"):
        probe = server[kind]["grpc"]
        assert probe["port"] == container_port(server, "grpc"), kind
        assert probe["service"] == LIVENESS_SERVICE == "liveness", kind


def test_liveness_is_more_patient_than_readiness(server: Resource) -> None:
    # A hung process is restarted, but only well after it stopped being sent calls.
    def window(probe: Resource) -> int:
        return int(probe.get("periodSeconds", 10)) * int(probe.get("failureThreshold", 3))

    assert window(server["livenessProbe"]) >= 60
    assert window(server["livenessProbe"]) >= 5 * window(server["readinessProbe"])


def test_the_server_gets_every_setting_it_needs(server: Resource) -> None:
    assert env_names(server) >= _SERVER_ENV


def test_the_worker_count_follows_the_cpu_limit_not_the_nodes_cpus(server: Resource) -> None:
    (workers,) = [v for v in server["env"] if v["name"] == "WORKERS"]
    ref = workers["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.cpu"
    assert ref.get("containerName", server["name"]) == server["name"]
    assert str(ref.get("divisor", "1")) == "1"
    assert "cpu" in server["resources"]["limits"]


def test_the_servers_configuration_reader_accepts_the_deployments_settings(
    server: Resource,
) -> None:
    settings = _settings_for(server)
    assert settings.grpc_port == container_port(server, "grpc")
    assert settings.purge_min_retention_days >= 30


def test_the_grpc_port_agrees_everywhere(server: Resource) -> None:
    grpc_port = container_port(server, "grpc")
    assert int(plain_env(server)["GRPC_PORT"]) == grpc_port
    for name in ("profile-service", "profile-service-headless"):
        (port,) = [p for p in find("Service", name)["spec"]["ports"] if p["name"] == "grpc"]
        assert port["targetPort"] in ("grpc", grpc_port), name
    policy = find("NetworkPolicy", "profile-service")
    assert any(
        port["port"] == grpc_port for rule in policy["spec"]["ingress"] for port in rule["ports"]
    )


def test_the_metrics_port_agrees_everywhere(deployment: Resource, server: Resource) -> None:
    metrics_port = container_port(server, "metrics")
    assert int(plain_env(server)["METRICS_PORT"]) == metrics_port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == metrics_port
    (port,) = [
        p for p in find("Service", "profile-service")["spec"]["ports"] if p["name"] == "metrics"
    ]
    assert port["targetPort"] in ("metrics", metrics_port)


def test_termination_grace_outlasts_the_pre_stop_pause_the_drain_and_the_span_flush(
    deployment: Resource, server: Resource
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    drain = _settings_for(server).shutdown_grace_seconds
    pre_stop = server["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    stop = float(pre_stop[1]) + SETTLE_SECONDS + drain + FLUSH_SECONDS
    assert pod["terminationGracePeriodSeconds"] > stop
    assert drain >= 10


def test_the_deployment_runs_serve_on_at_least_two_replicas(
    deployment: Resource, server: Resource
) -> None:
    assert deployment["spec"]["replicas"] >= 2
    assert "command" not in server  # the image's entrypoint, profile-service
    assert build_parser().parse_args(server["args"]).command == "serve"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_disruption_budget_covers_the_server_and_leaves_room_to_drain_a_node(
    deployment: Resource,
) -> None:
    budget = find("PodDisruptionBudget", "profile-service")["spec"]
    assert selects(budget["selector"]["matchLabels"], _pod_labels(deployment))
    assert 1 <= budget["minAvailable"] < deployment["spec"]["replicas"]


def test_the_services_select_the_server_pods_and_nothing_else(
    deployment: Resource, purge_cronjob: Resource, migrate_job: Resource
) -> None:
    assert deployment["spec"]["selector"]["matchLabels"] == _pod_labels(deployment)
    for name in ("profile-service", "profile-service-headless"):
        selector = find("Service", name)["spec"]["selector"]
        assert selects(selector, _pod_labels(deployment)), name
        assert not selects(selector, _pod_labels(purge_cronjob)), name
        assert not selects(selector, _pod_labels(migrate_job)), name
    assert find("Service", "profile-service")["spec"]["type"] == "ClusterIP"
    # Headless: DNS returns the pods' addresses, for clients that do round_robin.
    headless = find("Service", "profile-service-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless.get("publishNotReadyAddresses", False) is False


def test_the_network_policy_admits_only_labelled_callers_and_monitoring(
    deployment: Resource, server: Resource, purge_cronjob: Resource
) -> None:
    policy = find("NetworkPolicy", "profile-service")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], _pod_labels(deployment))
    assert policy["policyTypes"] == ["Ingress"]
    by_port = {}
    for rule in policy["ingress"]:
        # A rule without `from` or without `ports` would admit everyone or every port.
        assert rule["from"] and rule["ports"], rule
        for port in rule["ports"]:
            by_port[port["port"]] = rule["from"]
    assert set(by_port) == {container_port(server, "grpc"), container_port(server, "metrics")}
    assert by_port[container_port(server, "grpc")] == [
        {"podSelector": {"matchLabels": {_CLIENT_LABEL: "true"}}}
    ]
    assert by_port[container_port(server, "metrics")] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # The purge pods call the server, so the policy must let them in.
    assert _pod_labels(purge_cronjob).get(_CLIENT_LABEL) == "true"


# --- every workload ---------------------------------------------------------------------------


def test_every_pod_runs_non_root_with_a_read_only_root_and_no_capabilities() -> None:
    templates = list(pod_templates())
    assert {name for name, _ in templates} == {
        "Deployment/profile-service",
        "CronJob/profile-purge",
        "Job/profile-migrate",
        "Job/profile-reencrypt",
    }
    for name, template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in containers(template):
            context = container["securityContext"]
            where = f"{name} container {container['name']}"
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, where


def test_every_secret_key_reference_exists_in_the_example_secret(
    example_secrets: dict[str, Resource],
) -> None:
    references = 0
    for name, template in pod_templates():
        for container in containers(template):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                references += 1
                secret = example_secrets.get(ref["name"])
                assert secret is not None, f"{name}: no example Secret {ref['name']}"
                assert ref["key"] in secret["stringData"], f"{name}: {ref['name']}/{ref['key']}"
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in example_secrets, name
    assert references >= 5


def test_every_config_map_key_reference_exists_in_the_config_map() -> None:
    config_maps = {
        m.resource["metadata"]["name"]: m.resource["data"]
        for m in manifests()
        if m.resource["kind"] == "ConfigMap"
    }
    references = 0
    for name, template in pod_templates():
        for container in containers(template):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("configMapKeyRef")
                if ref is None:
                    continue
                references += 1
                assert ref["key"] in config_maps.get(ref["name"], {}), f"{name}: {ref}"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, name
    assert references >= 5


def test_the_example_secret_holds_only_placeholders(example_secrets: dict[str, Resource]) -> None:
    assert set(example_secrets) == {"profile-service", "profile-service-migrate"}
    for name, secret in example_secrets.items():
        assert "data" not in secret, name  # stringData only: the placeholders stay readable
        for key, value in secret["stringData"].items():
            assert value == "" or "CHANGE-ME" in value, f"{name}/{key}"


# --- the migration Job ------------------------------------------------------------------------


def test_the_migration_job_runs_migrate_as_the_schema_owner(
    migrate_job: Resource, server: Resource
) -> None:
    pod = migrate_job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["profile-service"]
    assert build_parser().parse_args(container["args"]).command == "migrate"
    assert pod["restartPolicy"] == "Never"
    assert migrate_job["spec"]["backoffLimit"] >= 1
    assert migrate_job["spec"]["activeDeadlineSeconds"] > 0

    def secret_of(c: Resource) -> str:
        (var,) = [v for v in c["env"] if v["name"] == "DATABASE_URL"]
        name: str = var["valueFrom"]["secretKeyRef"]["name"]
        return name

    assert secret_of(container) == "profile-service-migrate"
    # The server's login role must never be the schema owner.
    assert secret_of(server) != secret_of(container)


# --- the purge CronJob ------------------------------------------------------------------------


def test_the_purge_cronjob_runs_a_real_purge_command_against_the_service(
    purge_cronjob: Resource, server: Resource
) -> None:
    job = purge_cronjob["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    assert container["command"] == ["profile-service"]
    args = build_parser().parse_args(container["args"])  # exits (fails the test) on a bad flag
    assert args.command == "purge"
    assert args.token is None  # minted from JWT_SECRET at run time, never stored
    assert not args.dry_run
    host, _, port = args.target.rpartition(":")
    service = find("Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}
    assert selects(service["spec"]["selector"], _pod_labels(find("Deployment", "profile-service")))
    # The command gives up (and exits non-zero) before Kubernetes kills the Job.
    assert args.timeout < job["activeDeadlineSeconds"]
    refs = {v["name"]: v["valueFrom"] for v in container["env"]}
    assert refs["JWT_SECRET"]["secretKeyRef"] == {"name": "profile-service", "key": "JWT_SECRET"}
    # Minted tokens carry the audience the server checks, if it checks one.
    assert refs["JWT_AUDIENCE"] == next(
        v["valueFrom"] for v in server["env"] if v["name"] == "JWT_AUDIENCE"
    )


def test_the_purge_cronjob_runs_daily_without_overlap_and_keeps_its_failures_visible(
    purge_cronjob: Resource,
) -> None:
    spec = purge_cronjob["spec"]
    minute, hour, *every = spec["schedule"].split()
    assert every == ["*", "*", "*"]
    assert re.fullmatch(r"\d+", minute) and re.fullmatch(r"\d+", hour)
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < 24 * 3600
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1
    assert job["activeDeadlineSeconds"] > 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_a_misspelt_purge_flag_would_fail_the_command_check(purge_cronjob: Resource) -> None:
    (container,) = purge_cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    misspelt = [arg.replace("--target", "--targett") for arg in container["args"]]
    assert misspelt != container["args"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(misspelt)
