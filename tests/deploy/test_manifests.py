"""k8s/: every kustomization renders, validates against KubeRay v1.7.0's CRDs, and wires the farm the way
the cluster needs it (operator key, model cache, metrics, GPU groups and their card resources, the job).
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir

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
    (service,) = objects(kustomization, "Service")
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
    assert config.metrics_port == objects(f"overlays/{overlay}", "Service")[0]["spec"]["ports"][0]["port"]
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
