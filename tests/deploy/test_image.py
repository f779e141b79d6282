"""The Dockerfile and the card resource helper (no Docker engine here: the image is never built)."""

from __future__ import annotations

import fnmatch
import json
import re
import runpy
import subprocess
import sys

import pytest

from cluster.protocol.cards import CardModel
from tests.deploy.manifests import K8S, REPO, one

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_is_a_pinned_ray_gpu_image_with_the_clusters_ray():
    froms = [args for op, args in instructions() if op == "FROM"]
    assert len(froms) == 1
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py311-gpu", froms[0])
    assert match, f"FROM {froms[0]}: pin a release of Ray's GPU image"
    assert one("base", "RayCluster")["spec"]["rayVersion"] == match.group(1)
    runs = " ".join(args for op, args in instructions() if op == "RUN")
    assert f'"ray[default]=={match.group(1)}"' in runs  # pip may not move Ray away from the image's


def test_the_image_installs_the_project_with_its_gpu_extras_editable():
    runs = " ".join(args for op, args in instructions() if op == "RUN")
    # Editable: python -m cluster finds conf/ beside the package.
    assert re.search(r'pip install [^&]*-e "\.\[gpu\]"', runs), runs
    assert '"vllm==${VLLM_VERSION}"' in runs
    copied = {args.split()[-2] for op, args in instructions() if op == "COPY"}
    assert {"cluster", "network", "conf"} <= copied


def test_the_image_runs_as_ray_with_the_cache_on_the_shared_volume():
    ops = instructions()
    assert ops[-1] == ("USER", "ray")
    env = " ".join(args for op, args in ops if op == "ENV")
    assert "HELIUM_MODEL_CACHE=/mnt/helium-models" in env
    assert "HF_HOME=/mnt/helium-models/" in env


def test_no_secret_is_baked_into_the_image():
    for op, args in instructions():
        if op in ("ENV", "ARG"):
            assert not re.search(r"MNEMONIC|PASSWORD|TOKEN|SECRET|PRIVATE|_KEY", args, re.IGNORECASE), args
    ignored = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for secret in (".env", "x.key", "keystore.json", "deployment.json", ".helium"):
        assert any(fnmatch.fnmatch(secret, pattern.removeprefix("**/")) for pattern in ignored), secret
    # What the image copies is not ignored.
    for source in ("cluster", "network", "conf", "pyproject.toml", "README.md"):
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


@pytest.mark.parametrize(
    ("gpu_name", "vram_gb", "count"),
    [("NVIDIA H100 80GB HBM3", 80, 8), ("NVIDIA GeForce RTX 4090", 24, 2)],
)
def test_card_resource_script_prints_the_codes_resource(gpu_name, vram_gb, count):
    runtime = "vllm-0.33.0-batch-invariant"
    expected = {CardModel(gpu_name, vram_gb, runtime).resource_name: count}
    script = str(K8S / "card-resource.py")
    args = [sys.executable, script, gpu_name, str(vram_gb), runtime, "--count", str(count)]
    printed = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == expected
    kuberay = runpy.run_path(script)["kuberay_value"](expected)
    from tests.deploy.manifests import ray_start_resources

    assert ray_start_resources({"resources": kuberay}) == expected
