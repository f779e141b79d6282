"""``python -m cluster [overrides...]``: the node cluster's entry point (Hydra).

Today it validates the configuration and prints the protocol's task schemas and the rig's card model
keys; the coordinator and workers that will serve the network arrive with their issues.
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
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    print_summary(config)


if __name__ == "__main__":
    main()
