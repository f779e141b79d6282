"""``python -m cluster [overrides...]``: run the farm's node cluster (Hydra config, see conf/).

    python -m cluster rig=cpu-devnet network.chain.rpc_url=... network.relay_url=... \\
        network.chain.deployment_file=deployment.json
    python -m cluster status [--json]          # the running farm at a glance
    python -m cluster resume-card <card key>    # lift the card guard's pause of a card model, once fixed
    python -m cluster ledger [--csv]            # earned, gas, slashed, top-ups, payouts per day and card
    python -m cluster payout [--dry-run]        # the node accounts' earnings to the payout address
    python -m cluster retire --card KEY | --all # pause, finish, quit for the stakes, sweep everything
    python -m cluster drain MACHINE             # take a machine out (its accounts paused, jobs finished)
    python -m cluster undrain MACHINE           # and back

It connects to the Ray cluster in RAY_ADDRESS (so it works under ``ray job submit``) or starts a local
one. Without a chain and relay configured it prints the configuration, the card model keys and the task
schemas, and says how to start the local network.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cluster.cli_options import add_ray_address
from cluster.config import ChainEndpoints, ConfigError, load_config
from cluster.coordinator.funds import cli as funds_cli
from cluster.coordinator.scheduling import drain_cli
from cluster.ledger import cli as ledger_cli
from cluster.summary import print_summary

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
COMMANDS = ("status", "resume-card", "ledger", *funds_cli.COMMANDS, *drain_cli.COMMANDS)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        config = load_config(cfg)
        if config.network.chain.rpc_url is None:
            print_summary(config)
            print("no chain configured (network.chain.rpc_url): scripts/devnet.sh runs a whole local network")
            return
        from cluster.launch import connect_ray, serve

        endpoints = ChainEndpoints.of(config.network)
        is_local = connect_ray(config)
        sys.exit(serve(config, endpoints, is_local=is_local))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)


def parse_command(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster", description="Commands for a running farm.")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser(
        "status",
        help="the running farm at a glance (connects to the Ray cluster)",
        description="The running farm: per card model and GPU worker (busy or idle, warm models, jobs done, "
        "VRAM used), per node account (status, QoS score, stake, earnings), alerts, and the chain and "
        "relay it talks to.",
    )
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    add_ray_address(status)
    resume = commands.add_parser(
        "resume-card",
        help="lift the card guard's pause of a card model and resume its nodes",
        description="Lift the pause the card guard put on a card model (its nodes disagreed on a "
        "task) once the card is fixed. With a running farm its nodes resume at once; with --state-dir "
        "(the farm stopped) the pause is lifted in the state directory and the nodes resume at its next "
        "start.",
    )
    resume.add_argument(
        "card_key", help="the card model key, or a prefix of it such as the 8 hex digits the alert shows"
    )
    resume.add_argument(
        "--state-dir", type=Path, help="the farm's state_dir, when its coordinator is stopped"
    )
    ledger_cli.add_parser(commands)
    funds_cli.add_parsers(commands)
    drain_cli.add_parsers(commands)
    return parser.parse_args(argv)


def run_command(options: argparse.Namespace) -> int:
    if options.command == "resume-card" and options.state_dir is not None:
        return _resume_card_offline(options.state_dir, options.card_key)
    if options.command == "ledger" and options.state_dir is not None:
        report = ledger_cli.read_offline(
            options.state_dir, by_account=options.accounts, since_day=options.since
        )
        if report is not None:
            ledger_cli.print_report(report, as_csv=options.csv)
        return 0 if report is not None else 1
    import logging

    from cluster import envs

    address = getattr(options, "address", None) or envs.RAY_ADDRESS.get() or "auto"
    if envs.RAY_AUTH_MODE.get() is None and (Path.home() / ".ray/auth_token").exists():
        # NOTE: Ray starts local clusters with token authentication and keeps the token there, but a
        # driver that connects to an address only sends it in token mode, read when ray is imported.
        os.environ[envs.RAY_AUTH_MODE.name] = "token"
    import ray

    from cluster.launch import find_coordinator

    try:
        ray.init(address=address, namespace="helium", log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        print(f"no Ray cluster at {address!r}: {exc} (--address, or RAY_ADDRESS)", file=sys.stderr)
        return 1
    try:
        actor = find_coordinator()
    except ValueError:
        print("no coordinator is running in this Ray cluster", file=sys.stderr)
        return 1
    if options.command == "status":
        from cluster.status.render import render_status

        farm = ray.get(actor.farm_status.remote())
        print(farm.model_dump_json(indent=2) if options.json else render_status(farm))
        return 0
    if options.command == "ledger":
        report = ray.get(actor.ledger.remote(by_account=options.accounts, since_day=options.since))
        ledger_cli.print_report(report, as_csv=options.csv)
        return 0
    if options.command in funds_cli.COMMANDS:
        return funds_cli.run(options, actor)
    if options.command in drain_cli.COMMANDS:
        return drain_cli.run(options, actor)
    try:
        statuses = ray.get(actor.resume_card.remote(options.card_key))
    except ray.exceptions.RayTaskError as exc:
        print(f"not resumed: {exc.cause}", file=sys.stderr)
        return 1
    print("\n".join(f"{node}: {status.name.lower()}" for node, status in statuses.items()))
    return 0


def _resume_card_offline(state_dir: Path, key_text: str) -> int:
    from cluster.coordinator.store import RoundStore
    from cluster.protocol.cards import key_matches

    store = RoundStore(state_dir.expanduser().resolve() / "coordinator")
    try:
        matching = [key for key in store.paused_cards() if key_matches(key, key_text)]
        if len(matching) != 1:
            print(f"{key_text!r} names {len(matching)} paused card models: "
                  f"{[key.hex()[:8] for key in store.paused_cards()]}", file=sys.stderr)  # fmt: skip
            return 1
        store.resume_card(matching[0])
        print(f"pause lifted for card model {matching[0].hex()}; its nodes resume at the farm's next start")
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    if sys.argv[1:2] and sys.argv[1] in COMMANDS:
        sys.exit(run_command(parse_command(sys.argv[1:])))
    main()
