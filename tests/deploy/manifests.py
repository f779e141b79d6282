"""Rendering k8s/ with ``kubectl kustomize`` and validating it against KubeRay's CRD schemas."""

from __future__ import annotations

import copy
import functools
import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

from cluster import envs
from tests.outside import missing

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
KUSTOMIZATIONS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]
# CI keeps ../shared beside the clone; HELIUM_KUBERAY_CRDS points elsewhere.
CRD_SOURCE = "github.com/ray-project/kuberay, ray-operator/config/crd/bases at tag v1.7.0"
CRD_DIR = Path(envs.KUBERAY_CRDS.get() or REPO.parent / "shared/k8s/kuberay-crds-v1.7.0")
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing("kubectl", "install it to render the kustomizations (kubectl kustomize)")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / kustomization)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"kubectl kustomize k8s/{kustomization} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def objects(kustomization: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in render(kustomization) if doc["kind"] == kind]


def one(kustomization: str, kind: str) -> dict[str, Any]:
    found = objects(kustomization, kind)
    assert len(found) == 1, f"k8s/{kustomization} renders {len(found)} {kind} objects, expected one"
    return found[0]


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused: the API server prunes them silently, so a misspelt field
    (``rayStartParam``) would be dropped without a word. Free-form objects stay free."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def crd_validator(kind: str, version: str = "v1") -> Draft7Validator:
    path = CRD_DIR / CRD_FILES[kind]
    if not path.exists():
        missing(
            f"KubeRay CRD {path}",
            f"CI keeps ../shared/k8s beside the clone; elsewhere set HELIUM_KUBERAY_CRDS to a folder holding "
            f"{' and '.join(CRD_FILES.values())} ({CRD_SOURCE})",
        )
    crd = yaml.safe_load(path.read_text())
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = copy.deepcopy(entry["schema"]["openAPIV3Schema"])
    return Draft7Validator(_strict(schema))


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = crd_validator(doc["kind"], doc["apiVersion"].split("/")[1])
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(doc)
    ]


def ray_start_resources(params: dict[str, str]) -> dict[str, float]:
    """rayStartParams.resources as Ray gets it: KubeRay pastes the value into a shell command line."""
    if "resources" not in params:
        return {}
    (value,) = shlex.split(params["resources"])
    return json.loads(value)


def pod_specs(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every Ray pod template of a RayCluster by group name; the head is "head"."""
    spec = cluster["spec"]
    pods = {"head": spec["headGroupSpec"]["template"]}
    pods.update({group["groupName"]: group["template"] for group in spec.get("workerGroupSpecs", [])})
    return pods


def groups(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = cluster["spec"]
    found = {"head": spec["headGroupSpec"]}
    found.update({group["groupName"]: group for group in spec.get("workerGroupSpecs", [])})
    return found


def mounts_of(template: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """mountPath -> (volume name, volume source) of a pod template's first container."""
    volumes = {volume["name"]: volume for volume in template["spec"].get("volumes", [])}
    (container, *_) = template["spec"]["containers"]
    return {m["mountPath"]: (m["name"], volumes[m["name"]]) for m in container.get("volumeMounts", [])}


def env_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for c in template["spec"]["containers"] for e in c.get("env", [])}


def entrypoint_overrides(job: dict[str, Any]) -> list[str]:
    """The Hydra overrides of the RayJob's ``python -m cluster`` (Ray runs the entrypoint in a shell)."""
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "cluster"], argv
    return argv[3:]
