"""k8s/relay: two relay replicas on one PostgreSQL and one shared file volume, wired as the relay needs."""

from __future__ import annotations

import re

from sqlalchemy.engine.url import make_url

from cluster.chain.artifacts import NETWORK_CONTRACTS
from cluster.chain.deploy import Deployment
from network.relay.__main__ import parse_config
from network.relay.app import create_app
from network.relay.config import RelayConfig
from network.relay.files import FileStore
from network.relay.store import RelayStore
from tests.deploy.manifests import env_of, mounts_of, objects, one

KUSTOMIZATION = "relay"


def relay_deployment() -> dict:
    (deployment,) = [
        d for d in objects(KUSTOMIZATION, "Deployment") if d["metadata"]["name"] == "helium-relay"
    ]
    return deployment


def relay_args(deployment: dict) -> list[str]:
    """The container's arguments with each ``$(VAR)`` as Kubernetes expands it (a stand-in value), after
    checking that every variable they use is defined in the container's env."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = env_of(deployment["spec"]["template"])
    assert container["command"] == ["python", "-m", "network.relay"]
    args = container["args"]
    used = {name for arg in args for name in re.findall(r"\$\((\w+)\)", arg)}
    assert used <= set(env), f"arguments use undefined variables: {used - set(env)}"
    return [re.sub(r"\$\((\w+)\)", lambda m: f"x{m.group(1).lower()}", arg) for arg in args]


def test_two_replicas_share_one_rwx_volume_at_their_data_dir(tmp_path):
    deployment = relay_deployment()
    assert deployment["spec"]["replicas"] >= 2
    args = relay_args(deployment)
    deployment_file = tmp_path / "deployment.json"
    addresses = {name: "0x" + f"{i + 1:040x}" for i, name in enumerate(NETWORK_CONTRACTS)}
    Deployment(chain_id=1, owner="0x" + "9" * 40, addresses=addresses, block_number=7).save(deployment_file)
    config = parse_config([a.replace("/etc/helium/deployment.json", str(deployment_file)) for a in args])
    mounts = mounts_of(deployment["spec"]["template"])
    _, volume = mounts[str(config.data_dir)]
    claims = {c["metadata"]["name"]: c for c in objects(KUSTOMIZATION, "PersistentVolumeClaim")}
    claim = claims[volume["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (deployment_arg,) = [a for a in args if a.startswith("--deployment=")]
    assert deployment_arg.removeprefix("--deployment=").rsplit("/", 1)[0] in mounts  # the network's file


def test_the_replicas_use_the_postgresql_service_with_the_installed_driver():
    config = parse_config(
        [a for a in relay_args(relay_deployment()) if not a.startswith("--deployment")]
        + ["--task-address", "0x" + "11" * 20]
    )
    url = make_url(config.db_url)
    assert url.drivername == "postgresql+psycopg"
    services = {s["metadata"]["name"]: s for s in objects(KUSTOMIZATION, "Service")}
    database = services[url.host]
    assert [p["port"] for p in database["spec"]["ports"]] == [url.port]
    statefulset = one(KUSTOMIZATION, "StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert database["spec"]["selector"].items() <= labels.items()
    env = env_of(statefulset["spec"]["template"])
    assert env["POSTGRES_DB"]["value"] == url.database and env["POSTGRES_USER"]["value"] == url.username


def test_readiness_is_a_route_of_the_relay_and_the_service_reaches_every_replica(tmp_path):
    deployment = relay_deployment()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    probe = container["readinessProbe"]["httpGet"]
    config = RelayConfig(rpc_url="http://x", task_address="0x" + "11" * 20, data_dir=tmp_path)
    store = RelayStore(config.db_url)
    try:
        app = create_app(config, store, FileStore(tmp_path / "files"))
        assert probe["path"] in app.openapi()["paths"]
    finally:
        store.close()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == 8008 and "--port=8008" in container["args"]
    service = next(s for s in objects(KUSTOMIZATION, "Service") if s["metadata"]["name"] == "helium-relay")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [probe["port"]]
