"""Starting the farm from a driver: connect to Ray, start (or find) the coordinator actor, serve until told
to stop. Used by ``python -m cluster`` (also under ``ray job submit``) and by the local network.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import ray

from cluster import envs
from cluster.config import ChainEndpoints, ClusterConfig, ConfigError
from cluster.coordinator.actor import ACTOR_NAME, NAMESPACE, CoordinatorActor
from cluster.coordinator.scheduling.placement import rig_ray_resources
from cluster.prefetch import prefetch_models
from cluster.status.render import render_summary

log = logging.getLogger(__name__)


def connect_ray(config: ClusterConfig, *, log_to_driver: bool = True) -> bool:
    """Join the Ray cluster named by RAY_ADDRESS (``ray job submit`` sets it), or start a local one.

    ``log_to_driver=False`` leaves the actors' output in Ray's log files (the devnet shows its own view).
    Returns True when this process started a local cluster.
    """
    if ray.is_initialized():
        return False
    address = envs.RAY_ADDRESS.get()
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=log_to_driver)
        return False
    resources = {} if config.rig.discover_gpus else rig_ray_resources(config.rig, config.engine)
    ray.init(
        address="local", namespace=NAMESPACE, resources=resources, include_dashboard=False,
        log_to_driver=log_to_driver,
    )  # fmt: skip
    return True


def start_coordinator(
    config: ClusterConfig,
    endpoints: ChainEndpoints,
    *,
    pass_secret: bool = False,
) -> Any:
    """The coordinator actor: found by name if it runs, else created (detached: it outlives this driver).

    The operator's secret reaches the actor from its own environment: a job's runtime env or the pod's
    Secret-backed variable. Only a cluster this process started (the devnet, a single host) gets it passed
    through the actor's runtime env, which the Ray dashboard would show to anyone who can open it.
    """
    secret_env = config.network.operator.mnemonic_env
    if secret_env not in os.environ:
        raise ConfigError(f"the operator's mnemonic is read from ${secret_env}; set it (network.operator)")
    env_vars = {envs.HF_HUB_OFFLINE.name: envs.HF_HUB_OFFLINE.get() or "0"}
    if pass_secret:
        env_vars[secret_env] = os.environ[secret_env]
    return CoordinatorActor.options(
        name=ACTOR_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        resources=dict(config.coordinator_resources),
        runtime_env={"env_vars": env_vars},
    ).remote(config, endpoints)


def find_coordinator() -> Any:
    return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)


def serve(
    config: ClusterConfig, endpoints: ChainEndpoints, *, is_local: bool, status_every_s: float = 10.0
) -> int:
    """Run until SIGINT/SIGTERM, printing the farm's status; then stop gracefully."""
    if config.rig.prefetch_models:  # here, where the operator sees each download and each failure
        offline = (envs.HF_HUB_OFFLINE.get() or "").upper() in {"1", "ON", "YES", "TRUE"}
        prefetch_models(config.rig, is_offline=offline, say=lambda line: print(line, flush=True))
    actor = start_coordinator(config, endpoints, pass_secret=is_local)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"[cluster] coordinator {ACTOR_NAME!r} starting (workers, reference check, node joins)...", flush=True
    )
    while not stop.is_set():
        print(render_summary(ray.get(actor.status.remote())), flush=True)
        stop.wait(status_every_s)
    print("[cluster] stopping: pausing nodes, finishing running tasks...", flush=True)
    final = ray.get(actor.stop.remote(quit=config.quit_on_stop))
    ray.get(actor.shutdown_workers.remote())
    ray.kill(actor)
    if final is not None:
        print(render_summary(final), flush=True)
    return 0
