"""``python -m cluster [overrides...]``: run the farm's node cluster (Hydra config, see conf/).

    python -m cluster rig=cpu-devnet network.chain.rpc_url=... network.relay_url=... \\
        network.chain.deployment_file=deployment.json
    python -m cluster status        # the running farm at a glance

It connects to the Ray cluster in RAY_ADDRESS (so it works under ``ray job submit``) or starts a local
one. Without a chain and relay configured it prints the configuration, the card model keys and the task
schemas, and says how to start the local network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cluster.config import ConfigError, load_config
from cluster.summary import print_summary

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        config = load_config(cfg)
        if config.network.chain.rpc_url is None:
            print_summary(config)
            print("no chain configured (network.chain.rpc_url): scripts/devnet.sh runs a whole local network")
            return
        from cluster.launch import chain_settings, connect_ray, serve

        chain = chain_settings(config, reference_model=config.engine.reference_model)
        is_local = connect_ray(config)
        sys.exit(serve(config, chain, is_local=is_local))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)


def status() -> None:
    import ray

    from cluster.launch import find_coordinator, format_status

    ray.init(address="auto", namespace="helium", log_to_driver=False)
    try:
        print(format_status(ray.get(find_coordinator().status.remote())))
    except ValueError:
        print("no coordinator is running in this Ray cluster", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["status"]:
        status()
    else:
        main()
