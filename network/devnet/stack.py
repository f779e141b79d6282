"""The devnet's parts, started in order and stopped in reverse: chain, contracts, relay, cluster, app."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from eth_account import Account
from hydra import compose, initialize_config_dir
from web3 import HTTPProvider, Web3

from cluster import envs
from cluster.chain.anvil import DEV_MNEMONIC, Anvil, free_port
from cluster.chain.contracts import Validation
from cluster.chain.deploy import ContractParameters, Deployment, deploy_network
from cluster.config import ClusterConfig, load_config
from cluster.coordinator.round_state import Outcome
from cluster.protocol.task import TaskType
from network.app import TaskAbortedError
from network.devnet.logs import link_ray_logs, route_library_loggers, send_logs_to
from network.devnet.models import ensure_models, gpt_task, sd_task
from network.devnet.view import Board, LineView
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
OPERATOR_FUNDS_WEI = 5_000 * 10**18
# From Ctrl-C or SIGTERM to every process gone within 10 s: the farm's graceful stop gets this much, the
# rest goes to Ray's shutdown, the bridge, the relay and anvil (about 2 s on a loaded two-core machine).
STOP_BUDGET_S = 6.0
# The audit pool's seed at --audit-rate N > 1: an audit draws two runs from it (an SD task's run is about
# 0.67 CNX at the default price), so 100 CNX pays well over a hundred audits before premiums refill it.
AUDIT_POOL_SEED_WEI = 100 * 10**18
Account.enable_unaudited_hdwallet_features()


def dev_account(index: int) -> Any:
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def answers(rpc_url: str, timeout_s: float = 1.0) -> bool:
    """Whether the chain answers at all, within ``timeout_s``."""
    return Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s})).is_connected()


def set_audit_rate(w3: Web3, deployment: Deployment, rate: int, pool_wei: int = AUDIT_POOL_SEED_WEI) -> None:
    """The owner sets ``Task.auditRate`` to ``rate`` (tasks created afterwards) and, when it samples
    (rate > 1), seeds the audit pool with ``pool_wei`` (docs/protocol-decisions.md, "Sampled audits")."""
    task = deployment.bind(w3).contract("Task")
    owner = deployment.owner
    calls = [(task.functions.setAuditRate(rate), 0)]
    if rate > 1 and pool_wei:
        calls.append((task.functions.fundAuditPool(), pool_wei))
    for call, value in calls:
        receipt = w3.eth.wait_for_transaction_receipt(call.transact({"from": owner, "value": value}))
        if receipt["status"] != 1:
            raise RuntimeError(f"{call.fn_name} reverted (audit rate {rate})")


def context_of(model_dir: Path) -> int | None:
    """A text model's context in tokens, from its config.json (for the bridge's prompt check)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return config.get("max_position_embeddings")


class Devnet:
    def __init__(
        self, root: Path, overrides: list[str], *, audit_rate: int = 1, validation: Validation | None = None
    ):
        """``audit_rate``: the Task contract's N after deployment (1: today's protocol). ``validation``: the
        application's, by default SAMPLED when N > 1 and FULL otherwise."""
        if not 1 <= audit_rate <= 65_535:
            raise ValueError(f"the audit rate must be in 1..65535, got {audit_rate}")
        self.audit_rate = audit_rate
        if validation is None:
            validation = Validation.SAMPLED if audit_rate > 1 else Validation.FULL
        self.validation = validation
        self.root = root.resolve()
        self.run_dir = self.root / "run"
        self.overrides = overrides
        self.log_dir = self.run_dir / "logs"
        self._exit = ExitStack()
        self.actor: Any = None
        self.counts = {"succeeded": 0, "aborted": 0, "failed": 0}
        self.board = Board(log_dir=str(self.log_dir))
        self.view: LineView = LineView(self.board)  # __main__ picks the live view on a terminal

    def say(self, message: str) -> None:
        log.info("[devnet] %s", message)
        self.view.say(message)

    # -- start and stop -------------------------------------------------------------------------------

    def start(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)  # the chain is new each run: so is all state
        self.run_dir.mkdir(parents=True)
        send_logs_to(self.log_dir, envs.LOG_LEVEL.get())
        self.say(f"logs of every process: {self.log_dir} (devnet.log; ray/ for the coordinator and workers)")
        self.say("making the models: a chat model trained on network/devnet/corpus.txt, a tiny SD "
                 f"(cached in {self.root / 'models'})")  # fmt: skip
        self.models = ensure_models(self.root / "models")
        # A sampled task's draw reads the hash of the block after its commitment's, from the block after
        # that: a chain that mines only on transactions would keep a lone node waiting for the next task.
        # Blocks each second as well as one per transaction (anvil's mixed mining), as a real chain moves.
        mining = {"block_time_s": 1, "extra_args": ("--mixed-mining",)} if self.audit_rate > 1 else {}
        self.anvil = self._exit.enter_context(Anvil(num_accounts=10, **mining))
        w3 = self.anvil.web3()
        # The relay's receipt key: its receipts of uploaded arguments refute false "no arguments" reports.
        relay_key = Account.create()
        self.deployment: Deployment = deploy_network(
            w3, w3.eth.accounts[0], ContractParameters(relay_signer=relay_key.address)
        )
        self.deployment.save(self.run_dir / "deployment.json")
        self.say(f"chain {self.anvil.rpc_url}, contracts deployed: {dict(self.deployment.addresses)}")
        if self.audit_rate > 1:
            set_audit_rate(w3, self.deployment, self.audit_rate)
            self.say(
                f"sampled audits: audit rate {self.audit_rate}, audit pool seeded with "
                f"{AUDIT_POOL_SEED_WEI / 10**18:.0f} CNX; the application asks for {self.validation.name}"
            )

        operator, mnemonic = Account.create_with_mnemonic()
        self._operator = operator.address
        os.environ[envs.OPERATOR_MNEMONIC.name] = mnemonic
        tx = w3.eth.send_transaction(
            {"from": w3.eth.accounts[1], "to": operator.address, "value": OPERATOR_FUNDS_WEI}
        )
        w3.eth.wait_for_transaction_receipt(tx)

        # a fixed port, so that the fault drill can stop the relay and start it again where clients look
        self.relay_config = RelayConfig(
            rpc_url=self.anvil.rpc_url, task_address=self.deployment.address("Task"),
            node_address=self.deployment.address("Node"), data_dir=self.run_dir / "relay",
            port=free_port(), start_block=self.deployment.block_number, poll_interval_s=0.2,
            receipt_key=relay_key.key.hex(), chain_id=self.deployment.chain_id,
        )  # fmt: skip
        self.relay = RunningRelay(self.relay_config).start()
        self._exit.callback(lambda: self.relay.stop())  # whichever relay runs at the end
        self.say(f"relay {self.relay.url}")
        self.metrics_port = free_port()
        self.config = self._cluster_config()
        self._start_cluster()
        self._start_bridge()

    def _cluster_config(self) -> ClusterConfig:
        base = [
            f"network.chain.rpc_url={self.anvil.rpc_url}",
            f"network.relay_url={self.relay.url}",
            f"+network.chain.deployment_file={self.run_dir / 'deployment.json'}",
            f"state_dir={self.run_dir / 'cluster'}",
            f"rig.model_cache_dir={self.root / 'hub-cache'}",
            f"metrics_port={self.metrics_port}",
            f"engine.reference_model={self.models['gpt']}",  # each card model's workers must agree on it
        ]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return load_config(compose(config_name="config", overrides=base + self.overrides))

    def _start_cluster(self) -> None:
        import ray

        from cluster.config import ChainEndpoints
        from cluster.launch import connect_ray, start_coordinator

        os.environ.setdefault(envs.HF_HUB_OFFLINE.name, "1")
        # the workers' and the coordinator's output goes to Ray's log files, not to this terminal
        is_local = connect_ray(self.config, log_to_driver=False)
        self._exit.callback(ray.shutdown)
        route_library_loggers()  # ray.init installed its stderr handler again
        link_ray_logs(self.log_dir)
        endpoints = ChainEndpoints.of(self.config.network)
        self.actor = start_coordinator(self.config, endpoints, pass_secret=is_local)
        self.say("cluster starting: workers, reference check per card model, node joins")
        status = ray.get(self.actor.status.remote())
        for message in status.reference_checks.values():
            self.say(f"check: {message}")
        farm = ray.get(self.actor.farm_status.remote())
        names = {card.short_id: card.gpu_name for card in farm.cards}
        self.board.card_of = {node.address: names[node.card_short_id] for node in farm.nodes}
        self.ray_address = ray.get_runtime_context().gcs_address
        self.say(
            f"{len(status.nodes)} nodes joined; metrics at http://127.0.0.1:{self.metrics_port}/metrics; "
            f"the farm: RAY_ADDRESS={self.ray_address} python -m cluster status"
        )

    def _start_bridge(self) -> None:
        from network.bridge import ApiKey, BridgeConfig, ModelSpec, RunningBridge, create_bridge

        key = "sk-devnet-" + secrets.token_hex(8)
        config = BridgeConfig(
            rpc_url=self.anvil.rpc_url, relay_url=self.relay.url,
            deployment_file=self.run_dir / "deployment.json", data_dir=self.run_dir / "bridge",
            port=int(envs.BRIDGE_PORT.get() or 8090), poll_interval_s=0.2,
            models=[
                ModelSpec(id="tiny-chat", path=str(self.models["gpt"]), task_type="gpt",
                          defaults={"max_new_tokens": 24}, context_tokens=context_of(self.models["gpt"])),
                ModelSpec(id="tiny-sd", path=str(self.models["sd"]), task_type="sd",
                          defaults={"steps": 2, "cfg": 5.0}),
            ],
            api_keys=[ApiKey(key=key, name="devnet", rate_per_s=5, burst=50)],
        )  # fmt: skip
        # its own wallet (dev account 3), apart from the task stream's (dev account 2): no nonce races
        app = create_bridge(config, account=dev_account(3))
        self.bridge = self._exit.enter_context(RunningBridge(app, port=config.port))
        self.say(f"bridge API {self.bridge.url}/v1 (key {key}); chat page: {self.bridge.url}/#key={key}")

    def stop(self, budget_s: float = STOP_BUDGET_S) -> None:
        """Stop every part, whichever died first: the farm's nodes quit while the chain answers, within
        ``budget_s``; then Ray's processes, the bridge, the relay and anvil, always."""
        deadline = time.monotonic() + budget_s
        if self.actor is not None:
            import ray

            try:
                self._stop_farm(deadline)
            except Exception as exc:  # stopping must go on to Ray, the relay and the chain
                self.say(f"cluster stop cut short: {exc!r}")
            finally:
                ray.kill(self.actor)
        self._exit.close()

    def _stop_farm(self, deadline: float) -> None:
        """The coordinator's graceful stop (its nodes paused and quit on chain, running tasks finished),
        if the chain answers: with anvil gone every step would retry its RPC calls until they give up."""
        import ray

        if not answers(self.anvil.rpc_url):
            self.say("the chain is gone: the farm stops without quitting its nodes")
            return
        final = ray.get(self.actor.stop.remote(quit=True), timeout=max(0.1, deadline - time.monotonic()))
        earned = f"{final.earned_cnx:.4f} CNX" if final is not None else "nothing (it was not running)"
        self.say(f"cluster stopped; the farm earned {earned}")

    # -- the application's task stream ------------------------------------------------------------------

    async def stream(
        self,
        num_tasks: int | None,
        in_flight: int,
        stop: asyncio.Event,
        kills: int = 0,
        relay_outage_s: float = 0,
        relay_wait_s: float = 60.0,
    ) -> int:
        watch = asyncio.create_task(self._watch_farm())
        work = asyncio.create_task(self._stream(num_tasks, in_flight, kills, relay_outage_s, relay_wait_s))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                return work.result()
            # Stopped: the tasks in flight are dropped, not awaited (their chain may be gone already).
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            return self._summary("stopped", ", the rest left in flight")
        finally:
            watch.cancel()
            stopped.cancel()

    async def _watch_farm(self, every_s: float = 0.5) -> None:
        """Keep the footer's farm numbers (earned, slashed) current and the live view's seconds ticking."""
        import ray

        n = 0
        while True:
            if n % 4 == 0:
                try:  # a killed coordinator does not answer until Ray restarts it: keep the last numbers
                    status = await asyncio.to_thread(ray.get, self.actor.status.remote(), timeout=5)
                    self.board.earned_cnx = status.earned_cnx
                    self.board.num_slashed = status.tasks.ended(Outcome.SLASHED)
                except Exception as exc:
                    log.info("[devnet] farm status not read: %r", exc)
            self.view.refresh()
            n += 1
            await asyncio.sleep(every_s)

    async def _stream(
        self, num_tasks: int | None, in_flight: int, kills: int, relay_outage_s: float, relay_wait_s: float
    ) -> int:
        from network.app.client import ApplicationClient, ClientSettings

        app_account = dev_account(2)
        settings = ClientSettings(relay_wait_s=relay_wait_s)
        async with ApplicationClient(
            self.anvil.rpc_url,
            self.deployment,
            self.relay.url,
            app_account,
            self.run_dir / "app",
            settings=settings,
        ) as app:
            room = asyncio.Semaphore(in_flight)
            running: set[asyncio.Task[None]] = set()
            # the fault drill: a kill after every (num_tasks // (kills + 1)) tasks sent
            kill_every = max(1, (num_tasks or 20) // (kills + 1)) if kills else 0
            killed = 0
            i = 0
            try:
                while num_tasks is None or i < num_tasks:
                    await room.acquire()
                    if kill_every and killed < kills and i and i % kill_every == 0:
                        killed += 1
                        await asyncio.to_thread(self._kill_coordinator, killed, kills)
                    if relay_outage_s and i == (num_tasks or 20) // 2:
                        outage = asyncio.create_task(self._relay_outage(relay_outage_s))
                        running.add(outage)
                        outage.add_done_callback(running.discard)
                    task = asyncio.create_task(self._one(app, i, room))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    i += 1
                await asyncio.gather(*running, return_exceptions=True)
            finally:  # cancelled (stopped): so are the tasks in flight, before the client closes
                for task in list(running):
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
        await asyncio.to_thread(self._show_metrics)
        await asyncio.to_thread(self._show_farm_receipts)
        return self._summary("summary")

    def _summary(self, what: str, rest: str = "") -> int:
        """The stream's last line; its exit code: 1 when any task was aborted or failed."""
        counts = self.counts
        done = f"{counts['succeeded']} succeeded, {counts['aborted']} aborted, {counts['failed']} failed"
        self.say(f"{what}: {done}{rest}")
        self.view.close()
        return 0 if counts["aborted"] == counts["failed"] == 0 else 1

    def _kill_coordinator(self, n: int, of: int) -> None:
        """SIGKILL the coordinator actor's process; Ray restarts it, and it resumes on its own: nothing
        here calls it until the end."""
        import ray

        ray.kill(self.actor, no_restart=False)
        self.say(f"fault: coordinator killed ({n} of {of}); Ray restarts it")

    async def _relay_outage(self, seconds: float) -> None:
        """Stop the relay for ``seconds`` while tasks stream, then start it again on the same port and data:
        uploads and downloads wait for it, and its follower resumes from its cursor."""
        await asyncio.to_thread(self.relay.stop)
        self.say(f"fault: relay stopped for {seconds:.0f} s")
        await asyncio.sleep(seconds)
        self.relay = await asyncio.to_thread(RunningRelay(self.relay_config).start)
        self.say("fault: relay back")

    def _show_farm_receipts(self) -> None:
        """The farm's transactions as the chain recorded them: how many, and how many failed."""
        import ray

        w3 = self.anvil.web3()
        farm = {*ray.get(self.actor.status.remote()).nodes, self._operator}
        statuses: list[int] = []
        for number in range(self.deployment.block_number, w3.eth.block_number + 1):
            receipts = w3.provider.make_request("eth_getBlockReceipts", [hex(number)])["result"] or []
            statuses += [int(r["status"], 16) for r in receipts if w3.to_checksum_address(r["from"]) in farm]
        self.say(f"farm transactions on chain: {statuses.count(1)} mined, {statuses.count(0)} failed")

    def _show_metrics(self) -> None:
        """The farm's Prometheus metrics, refreshed now, as an operator's scraper would read them."""
        import urllib.request

        import ray

        deadline = time.monotonic() + 30  # the farm settles a moment after the application sees the result
        while time.monotonic() < deadline:
            status = ray.get(self.actor.status.remote())
            if status.tasks.num_unfinished == 0:
                break
            time.sleep(0.2)
        self.board.earned_cnx = status.earned_cnx  # the footer's last numbers: settled
        self.board.num_slashed = status.tasks.ended(Outcome.SLASHED)
        ray.get(self.actor.refresh_metrics.remote())
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            lines = response.read().decode().splitlines()
        shown = [line for line in lines if line.startswith(("helium_task_outcomes", "helium_earned_cnx"))]
        if self.audit_rate > 1:
            shown += [line for line in lines if line.startswith("helium_sampled_rounds{")]
        self.say("metrics: " + "; ".join(shown))

    async def _one(self, app: Any, i: int, room: asyncio.Semaphore) -> None:
        task_type = TaskType.GPT if i % 2 == 0 else TaskType.SD
        args = gpt_task(self.models["gpt"], i) if task_type is TaskType.GPT else sd_task(self.models["sd"], i)
        row = self.board.add(i, task_type.name)

        def progress(event: Any) -> None:
            changed = self.board.on_event(
                i, event.name, event.task_id, getattr(event, "node", None),
                audit_rate=getattr(event, "audit_rate", None), audited=getattr(event, "is_audited", None),
            )  # fmt: skip
            if changed:
                self.view.changed(row)

        try:
            task_id, files = await app.run(task_type, args, request_id=f"devnet-{i}", timeout_s=600,
                                           on_progress=progress, validation=self.validation)  # fmt: skip
            row.chain_id = task_id
            shown = answer_of(files[0]) if task_type is TaskType.GPT else f"{len(files)} PNGs"
            self.view.changed(self.board.finish(i, "validated", shown))
            self.counts["succeeded"] += 1
        except Exception as exc:  # a task's failure is shown on its row; the stream goes on
            aborted = isinstance(exc, TaskAbortedError)
            self.counts["aborted" if aborted else "failed"] += 1
            self.view.changed(self.board.finish(i, "aborted" if aborted else "failed", str(exc)))
        finally:
            room.release()


def answer_of(result_json: bytes, num_chars: int = 100) -> str:
    """A GPT result's first answer, quoted and cut short: what the chat model said."""
    choices = json.loads(result_json)["choices"]
    text = " ".join(str(choices[0]["message"]["content"]).split()) if choices else ""
    return json.dumps(text[:num_chars] + ("..." if len(text) > num_chars else ""))
