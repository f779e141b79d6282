"""k8s/: every kustomization renders, validates against KubeRay v1.7.0's CRDs, and wires the farm the way
the cluster needs it (operator key, model cache, metrics, GPU groups and their card resources, the job,
machines draining before they go, GCS fault tolerance, the coordinator's state volume).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir

from cluster.chain.contracts import DEFAULT_RESPONSE_WINDOW_S, DEFAULT_TASK_TIMEOUT_S
from cluster.config import ClusterConfig, load_config
from cluster.protocol.cards import CARD_RESOURCE_PREFIX, CardModel
from cluster.workers.engines.text_vllm import VllmTextEngine
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore
from tests.deploy.manifests import (
    KUSTOMIZATIONS,
    OVERLAYS,
    REPO,
    entrypoint_overrides,
    env_of,
    groups,
    mounts_of,
    objects,
    one,
    pod_specs,
    ray_start_resources,
    render,
    schema_errors,
)

COORDINATOR_GROUP = "coordinator"
SECRET_ENV = "HELIUM_OPERATOR_MNEMONIC"
MODEL_CACHE_CLAIM = "helium-model-cache"
STATE_CLAIM = "helium-state"
METRICS_SERVICE = "helium-coordinator-metrics"
GCS_RECONNECT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"


def compose_entrypoint(overlay: str) -> ClusterConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return load_config(
            compose(
                config_name="config", overrides=entrypoint_overrides(one(f"overlays/{overlay}", "RayJob"))
            )
        )


def vllm_runtime_tag() -> str:
    """The runtime tag the image's engine reports: the vLLM the Dockerfile pins, through the engine's code."""
    (version,) = re.findall(r"^ARG VLLM_VERSION=(\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    store = ModelStore(tempfile.gettempdir(), is_offline=True)
    engine = VllmTextEngine(store, ModelCache(1), vllm_api=SimpleNamespace(version=version))
    return engine.runtime_tag()


def gpu_groups(overlay: str) -> dict[str, dict]:
    return {
        name: group
        for name, group in groups(one(f"overlays/{overlay}", "RayCluster")).items()
        if name not in ("head", COORDINATOR_GROUP)
    }


def by_name(kustomization: str, kind: str, name: str) -> dict:
    (found,) = [doc for doc in objects(kustomization, kind) if doc["metadata"]["name"] == name]
    return found


def kuberay_pod_labels(cluster: dict, group_name: str) -> dict[str, str]:
    """The labels KubeRay v1.7 gives a worker group's pods (common/pod.go, labelPod): the template's own,
    then ray.io/cluster, ray.io/group and ray.io/node-type, which a template cannot override."""
    template = groups(cluster)[group_name]["template"]
    labels = dict(template.get("metadata", {}).get("labels", {}))
    labels.update(
        {
            "ray.io/cluster": cluster["metadata"]["name"],
            "ray.io/group": group_name,
            "ray.io/node-type": "worker",
        }
    )
    return labels


def ray_container(template: dict) -> dict:
    (container,) = [c for c in template["spec"]["containers"] if c["name"] in ("ray-head", "ray-worker")]
    return container


def drain_hook_argv(template: dict) -> list[str]:
    """The ray-worker container's preStop command as the shell runs it (``sh -c``), variables unexpanded."""
    command = ray_container(template)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/sh", "-c"] and len(command) == 3, command  # exec alone expands nothing
    return shlex.split(command[2])


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} in {argv}"
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_ray_objects_validate_against_the_kuberay_crds(kustomization):
    docs = [doc for doc in render(kustomization) if doc["apiVersion"].startswith("ray.io/")]
    assert sorted(doc["kind"] for doc in docs) == ["RayCluster", "RayJob"]
    for doc in docs:
        assert doc["apiVersion"] == "ray.io/v1"
        assert schema_errors(doc) == [], f"{doc['kind']} of k8s/{kustomization}"


def test_the_schema_check_refuses_a_misspelt_field_and_a_wrong_type():
    cluster = copy.deepcopy(one("base", "RayCluster"))
    cluster["spec"]["headGroupSpec"]["rayStartParam"] = {"num-cpus": "0"}  # the API server would drop it
    cluster["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-cpus"] = 0  # must be a string
    errors = schema_errors(cluster)
    assert any("rayStartParam" in e for e in errors), errors
    assert any("num-cpus" in e for e in errors), errors


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_head_runs_no_farm_work(kustomization):
    head = groups(one(kustomization, "RayCluster"))["head"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"].get("num-gpus", "0") == "0"
    assert ray_start_resources(head["rayStartParams"]) == {}
    (container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert {p["containerPort"] for p in container["ports"]} >= {6379, 8265}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_operator_key_comes_from_its_secret_and_only_to_the_coordinator_pod(kustomization):
    cluster, job = one(kustomization, "RayCluster"), one(kustomization, "RayJob")
    carriers = {name for name, pod in pod_specs(cluster).items() if SECRET_ENV in env_of(pod)}
    assert carriers == {COORDINATOR_GROUP}  # where the driver (entrypointResources) and the actor run
    ref = env_of(pod_specs(cluster)[COORDINATOR_GROUP])[SECRET_ENV]
    assert ref == {
        "name": SECRET_ENV,
        "valueFrom": {"secretKeyRef": {"name": "helium-operator", "key": "mnemonic"}},
    }
    # The submitter only calls the job API; the entrypoint does not run there.
    assert SECRET_ENV not in env_of(job["spec"]["submitterPodTemplate"])
    # No key is kept in the manifests: no Secret, and no ConfigMap that could hold one.
    assert objects(kustomization, "Secret") == []
    assert objects(kustomization, "ConfigMap") == []


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_ray_token_authentication_is_on_and_the_submitter_has_the_token(kustomization):
    cluster, job = one(kustomization, "RayCluster"), one(kustomization, "RayJob")
    auth = cluster["spec"]["authOptions"]
    assert auth["mode"] == "token"
    env = env_of(job["spec"]["submitterPodTemplate"])
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": auth["secretName"],
        "key": "auth_token",
    }


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_model_cache_is_one_rwx_claim_at_one_path_in_every_ray_pod(kustomization):
    (claim,) = [
        pvc
        for pvc in objects(kustomization, "PersistentVolumeClaim")
        if pvc["metadata"]["name"] == MODEL_CACHE_CLAIM
    ]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    paths = set()
    for name, pod in pod_specs(one(kustomization, "RayCluster")).items():
        cache = [
            path
            for path, (_, volume) in mounts_of(pod).items()
            if volume.get("persistentVolumeClaim", {}).get("claimName") == MODEL_CACHE_CLAIM
        ]
        assert len(cache) == 1, f"pod {name} mounts the model cache {len(cache)} times"
        paths.add(cache[0])
    assert paths == {"/mnt/helium-models"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_metrics_service_selects_the_coordinator_pod_on_9400(kustomization):
    cluster = one(kustomization, "RayCluster")
    service = by_name(kustomization, "Service", METRICS_SERVICE)
    # The labels KubeRay gives a worker group's pods.
    assert service["spec"]["selector"] == {
        "ray.io/cluster": cluster["metadata"]["name"],
        "ray.io/group": COORDINATOR_GROUP,
    }
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9400
    (container,) = pod_specs(cluster)[COORDINATOR_GROUP]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[port["targetPort"]] == 9400
    assert service["metadata"]["annotations"]["prometheus.io/port"] == "9400"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_job_runs_on_the_farm_cluster_with_its_driver_on_the_coordinator_pod(kustomization):
    cluster, job = one(kustomization, "RayCluster"), one(kustomization, "RayJob")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "rayClusterSpec" not in job["spec"]  # the GPU pods outlive a job (k8s/base/rayjob.yaml)
    needs = json.loads(job["spec"]["entrypointResources"])
    declared_by = {
        name
        for name, group in groups(cluster).items()
        if set(needs) & set(ray_start_resources(group["rayStartParams"]))
    }
    assert declared_by == {COORDINATOR_GROUP}
    coordinator = groups(cluster)[COORDINATOR_GROUP]
    assert coordinator["replicas"] == coordinator["minReplicas"] == coordinator["maxReplicas"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_groups_request_their_gpus_and_declare_their_card_model(overlay):
    cluster = one(f"overlays/{overlay}", "RayCluster")
    runtime = vllm_runtime_tag()
    assert gpu_groups(overlay), f"overlay {overlay} adds no GPU group"
    seen_cards = set()
    for name, group in gpu_groups(overlay).items():
        num_gpus = int(group["rayStartParams"]["num-gpus"])
        (container,) = group["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == num_gpus, name
        assert int(container["resources"]["requests"]["nvidia.com/gpu"]) == num_gpus, name
        notes = group["template"]["metadata"]["annotations"]
        assert notes["helium.dev/runtime-tag"] == runtime, f"{name}: the image's vLLM gives {runtime}"
        card = CardModel(notes["helium.dev/gpu-name"], int(notes["helium.dev/gpu-vram-gb"]), runtime)
        # One card model per pod (a Ray node), one unit of its resource per GPU.
        assert ray_start_resources(group["rayStartParams"]) == {card.resource_name: num_gpus}, name
        # GPU Feature Discovery's product label is the NVML name with dashes.
        assert group["template"]["spec"]["nodeSelector"] == {
            "nvidia.com/gpu.product": card.gpu_name.replace(" ", "-")
        }
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] >= 1
        seen_cards.add(card.key)
    assert len(seen_cards) == len(gpu_groups(overlay)), "two groups of one card model: merge them"
    for name in ("head", COORDINATOR_GROUP):
        declared = ray_start_resources(groups(cluster)[name]["rayStartParams"])
        assert not any(key.startswith(CARD_RESOURCE_PREFIX) for key in declared), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_entrypoint_composes_into_the_rig_the_pods_are_built_for(overlay):
    config = compose_entrypoint(overlay)
    cluster = one(f"overlays/{overlay}", "RayCluster")
    coordinator_pod = pod_specs(cluster)[COORDINATOR_GROUP]
    mounts = mounts_of(coordinator_pod)

    assert config.rig.name == overlay
    assert (config.rig.device, config.rig.discover_gpus, config.engine.text) == ("cuda", True, "vllm")
    assert config.network.chain.rpc_url and config.network.relay_url  # else python -m cluster only prints
    # The deployment JSON is the helium-deployment ConfigMap's key, mounted on the driver's pod.
    deployment = Path(config.network.chain.deployment_file)
    assert deployment.name == "deployment.json"
    assert mounts[str(deployment.parent)][1]["configMap"]["name"] == "helium-deployment"
    # The durable state is on its own claim, on the coordinator's pod.
    assert mounts[config.state_dir][1]["persistentVolumeClaim"]["claimName"] == "helium-state"
    # The coordinator actor is placed by a resource only the coordinator group declares.
    assert config.coordinator_resources == {"helium-coordinator": 1.0}
    declared_by = {
        name
        for name, group in groups(cluster).items()
        if "helium-coordinator" in ray_start_resources(group["rayStartParams"])
    }
    assert declared_by == {COORDINATOR_GROUP}
    assert config.network.operator.mnemonic_env == SECRET_ENV
    service = by_name(f"overlays/{overlay}", "Service", METRICS_SERVICE)
    assert config.metrics_port == service["spec"]["ports"][0]["port"]
    # Every GPU pod mounts the cache where the rig says; the reference model is prefetched into it.
    for name, pod in pod_specs(cluster).items():
        assert config.rig.model_cache_dir in mounts_of(pod), name
    assert config.engine.reference_model in config.rig.prefetch_models
    # The runtime tag comes from the image's vLLM (checked by every worker), not from an override.
    assert config.engine.runtime_tag is None


@pytest.mark.parametrize("rig", OVERLAYS)
def test_each_overlay_has_a_rig_that_loads(rig):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = load_config(compose(config_name="config", overrides=[f"rig={rig}"]))
    assert config.rig.name == rig
    assert config.rig.virtual_gpus == []
    assert config.rig.model_cache_dir == "/mnt/helium-models"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rig_splits_every_gpu_pod_into_workers_that_the_pod_holds(overlay):
    """What rig.gpu_sharing and rig.worker_layouts make of each pod's GPUs, by the pool's own planning."""
    from cluster.coordinator.scheduling.placement import check_node_capacity, plan_workers

    config = compose_entrypoint(overlay)
    runtime = vllm_runtime_tag()
    engine = config.engine.model_copy(update={"runtime_tag": runtime})  # vLLM is not installed here
    for name, group in gpu_groups(overlay).items():
        notes = group["template"]["metadata"]["annotations"]
        gpu = CardModel(notes["helium.dev/gpu-name"], int(notes["helium.dev/gpu-vram-gb"]), runtime)
        pod = [gpu] * int(group["rayStartParams"]["num-gpus"])
        slots = plan_workers([pod], config.rig, engine)  # raises, naming the option, for a misfit
        check_node_capacity(slots, [ray_start_resources(group["rayStartParams"])])
        assert sum(slot.gpu_share for slot in slots) == len(pod), name  # every GPU used, none twice
        assert all(slot.num_places == config.rig.places_per_gpu for slot in slots), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_gpu_pod_drains_its_machine_before_it_stops(overlay):
    """preStop: `python -m cluster drain <pod IP>` on the pod's own Ray, with a timeout past the longest
    task a place can hold, and a grace period past that timeout (else the kubelet kills the drain)."""
    job = one(f"overlays/{overlay}", "RayJob")
    interpreter = shlex.split(job["spec"]["entrypoint"])[:2]  # the image's python, as the entrypoint's
    # A job started as the pause lands: its deadline, moved by the last commitment and by the success.
    longest_task_s = DEFAULT_TASK_TIMEOUT_S + 2 * DEFAULT_RESPONSE_WINDOW_S
    assert gpu_groups(overlay)
    for name, group in gpu_groups(overlay).items():
        template = group["template"]
        argv = drain_hook_argv(template)
        assert argv[:4] == [*interpreter, "cluster", "drain"], name
        assert argv[4] == "$MY_POD_IP", name  # the Ray node's IP: the pod's
        assert env_of(template)["MY_POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert option(argv, "--address") == "auto", name  # the Ray this pod runs
        assert "--no-wait" not in argv, name  # the hook's end is what lets the pod stop
        timeout_s = int(option(argv, "--timeout-s"))
        assert timeout_s >= longest_task_s + 60, f"{name}: --timeout-s {timeout_s}, tasks {longest_task_s} s"
        grace_s = template["spec"]["terminationGracePeriodSeconds"]
        assert grace_s >= timeout_s + 60, f"{name}: grace period {grace_s} s, drain timeout {timeout_s} s"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_drain_hook_is_a_command_the_farm_parses(overlay):
    from cluster.__main__ import COMMANDS, parse_command

    if "drain" not in COMMANDS:
        pytest.skip("`python -m cluster drain` is not in this checkout yet (issue 26)")
    for name, group in gpu_groups(overlay).items():
        argv = drain_hook_argv(group["template"])
        options = parse_command(argv[3:])  # after `python -m cluster`
        assert (options.command, options.machine, options.address) == ("drain", "$MY_POD_IP", "auto"), name
        assert options.timeout_s == float(option(argv, "--timeout-s")) and not options.no_wait, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_disruption_budget_selects_each_gpu_group(overlay):
    kustomization = f"overlays/{overlay}"
    cluster = one(kustomization, "RayCluster")
    budgets = objects(kustomization, "PodDisruptionBudget")

    def selected_groups(budget: dict) -> set[str]:
        wanted = budget["spec"]["selector"]["matchLabels"].items()
        return {
            name
            for name in groups(cluster)
            if name != "head" and wanted <= kuberay_pod_labels(cluster, name).items()
        }

    for name in gpu_groups(overlay):
        (budget,) = [b for b in budgets if name in selected_groups(b)]
        assert selected_groups(budget) == {name}, budget["metadata"]["name"]  # never the coordinator pod
        assert budget["apiVersion"] == "policy/v1"
        assert budget["metadata"].get("namespace") == cluster["metadata"].get("namespace")
        # maxUnavailable, the operator's (1 here): 0 would refuse every eviction, and minAvailable
        # would have to follow the replicas.
        assert "minAvailable" not in budget["spec"]
        assert budget["spec"]["maxUnavailable"] == 1, budget["metadata"]["name"]
    assert len(budgets) == len(gpu_groups(overlay)), "a budget per GPU group, and none else"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_gcs_keeps_its_tables_in_the_redis_beside_the_cluster(kustomization):
    cluster = one(kustomization, "RayCluster")
    options = cluster["spec"]["gcsFaultToleranceOptions"]
    assert options.get("backend", "redis") == "redis"
    host, port = options["redisAddress"].removeprefix("redis://").split(":")
    # The address is the Redis Service of the same kustomization, and that Service selects the Redis pods.
    service = by_name(kustomization, "Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    redis = by_name(kustomization, "Deployment", host)
    pod = redis["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert redis["spec"]["replicas"] == 1 and redis["spec"]["strategy"]["type"] == "Recreate"
    # One password, from the operator's Secret, for the GCS and for Redis.
    secret_ref = options["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert env_of(pod)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == secret_ref
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert option(args, "--requirepass") == "$(REDIS_PASSWORD)"
    # appendonly on a claim: a restarted Redis still has the tables for a restarted head.
    assert option(args, "--appendonly") == "yes"
    _, volume = mounts_of(pod)[option(args, "--dir")]
    assert volume["persistentVolumeClaim"]["claimName"] in {
        pvc["metadata"]["name"] for pvc in objects(kustomization, "PersistentVolumeClaim")
    }
    # What KubeRay refuses beside gcsFaultToleranceOptions (utils/validation.go).
    head = groups(cluster)["head"]
    assert "redis-password" not in head["rayStartParams"]
    assert not {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD"} & set(env_of(head["template"]))


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_worker_pod_waits_for_a_restarted_head(kustomization):
    """KubeRay's 600 s under GCS fault tolerance, written out: Ray's default (60 s) would stop the GPU pods'
    raylets, and their warm models, before a new head is up."""
    for name, group in groups(one(kustomization, "RayCluster")).items():
        if name != "head":
            assert int(env_of(group["template"])[GCS_RECONNECT_ENV]["value"]) >= 600, name


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_coordinators_state_is_a_claim_on_the_pod_it_runs_on(kustomization):
    """The state outlives every pod (a claim, not an emptyDir), on the one pod whose resources place the
    coordinator actor; ReadWriteOnce and SQLite: no other pod mounts it, the head included."""
    cluster = one(kustomization, "RayCluster")
    claim = by_name(kustomization, "PersistentVolumeClaim", STATE_CLAIM)
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounted_by = {
        name: path
        for name, pod in pod_specs(cluster).items()
        for path, (_, volume) in mounts_of(pod).items()
        if volume.get("persistentVolumeClaim", {}).get("claimName") == STATE_CLAIM
    }
    coordinator_hosts = {
        name
        for name, group in groups(cluster).items()
        if "helium-coordinator" in ray_start_resources(group["rayStartParams"])
    }
    assert set(mounted_by) == coordinator_hosts == {COORDINATOR_GROUP}
    job = one(kustomization, "RayJob")
    if kustomization != "base":  # the base's entrypoint is a placeholder
        assert f"state_dir={mounted_by[COORDINATOR_GROUP]}" in entrypoint_overrides(job)
