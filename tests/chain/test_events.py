"""The event reader against a real anvil: order, decoding, a persisted cursor, confirmations, range limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from cluster.chain.events import ChainEvent, CursorStore, EventDecoder, EventReader
from cluster.chain.rpc import connect


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


def bump(w3: Web3, probe: Contract, tag: int, note: str, sender_index: int = 0) -> None:
    tx = probe.functions.bump(tag, note).transact({"from": w3.eth.accounts[sender_index]})
    w3.eth.wait_for_transaction_receipt(tx)


def reader_for(url: str, probe: Contract, cursor_path: Path, **kwargs: Any) -> EventReader:
    decoder = EventDecoder({"Probe": (probe.address, probe.abi)})
    start = kwargs.pop("start_block", 0)
    return EventReader(
        connect(url), decoder, CursorStore(cursor_path), name="probe", start_block=start, **kwargs
    )


async def collect(reader: EventReader) -> list[ChainEvent]:
    seen: list[ChainEvent] = []

    async def handler(events: list[ChainEvent]) -> None:
        seen.extend(events)

    try:
        await reader.poll(handler)
    finally:
        await reader.rpc.w3.provider.disconnect()
    return seen


def test_events_arrive_decoded_and_in_chain_order_across_pages(w3: Web3, anvil, probe, tmp_path):
    start = w3.eth.block_number
    for i in range(5):
        bump(w3, probe, tag=i, note=f"n{i}", sender_index=i % 2)
    probe.functions.pay().transact({"from": w3.eth.accounts[2], "value": 7})
    reader = reader_for(anvil.rpc_url, probe, tmp_path / "c.db", start_block=start, page_blocks=2)

    events = run(lambda: collect(reader))

    assert [e.name for e in events] == ["Bumped"] * 5 + ["Paid"]
    assert [e.args["tag"] for e in events[:5]] == [0, 1, 2, 3, 4]
    assert [e.args["count"] for e in events[:5]] == [1, 2, 3, 4, 5]
    assert events[1].args["by"] == w3.eth.accounts[1] and events[1].args["note"] == "n1"
    assert events[5].args == {"from": w3.eth.accounts[2], "amount": 7}
    assert [e.position for e in events] == sorted(e.position for e in events)
    assert reader.cursors.get("probe") == w3.eth.block_number + 1


def test_a_restarted_reader_resumes_at_its_cursor_without_repeats(w3: Web3, anvil, probe, tmp_path):
    start = w3.eth.block_number
    bump(w3, probe, 1, "before")
    first = run(lambda: collect(reader_for(anvil.rpc_url, probe, tmp_path / "c.db", start_block=start)))
    bump(w3, probe, 2, "after")
    # a new reader (a new process would be the same): same cursor file, start_block ignored once stored
    second = run(lambda: collect(reader_for(anvil.rpc_url, probe, tmp_path / "c.db", start_block=start)))
    assert [e.args["note"] for e in first] == ["before"]
    assert [e.args["note"] for e in second] == ["after"]


def test_a_failing_handler_leaves_the_cursor_and_the_page_is_delivered_again(
    w3: Web3, anvil, probe, tmp_path
):
    start = w3.eth.block_number
    bump(w3, probe, 1, "x")
    reader = reader_for(anvil.rpc_url, probe, tmp_path / "c.db", start_block=start)

    async def failing(events: list[ChainEvent]) -> None:
        raise RuntimeError("consumer crashed")

    async def scenario() -> list[ChainEvent]:
        with pytest.raises(RuntimeError):
            await reader.poll(failing)
        assert reader.next_block == start
        return await collect(reader)

    assert [e.args["note"] for e in run(scenario)] == ["x"]


def test_confirmations_hold_back_the_newest_blocks(w3: Web3, anvil, probe, tmp_path):
    start = w3.eth.block_number
    bump(w3, probe, 1, "deep")
    bump(w3, probe, 2, "shallow")
    reader = reader_for(anvil.rpc_url, probe, tmp_path / "c.db", start_block=start, confirmations=1)
    assert [e.args["note"] for e in run(lambda: collect(reader))] == ["deep"]
    w3.provider.make_request("evm_mine", [])
    reader = reader_for(anvil.rpc_url, probe, tmp_path / "c.db", start_block=start, confirmations=1)
    assert [e.args["note"] for e in run(lambda: collect(reader))] == ["shallow"]


def test_a_provider_range_limit_is_met_by_halving_the_page(w3: Web3, probe, rpc_proxy, tmp_path):
    start = w3.eth.block_number
    for i in range(6):
        bump(w3, probe, i, f"n{i}")
    rpc_proxy.max_log_range = 2
    reader = reader_for(rpc_proxy.url, probe, tmp_path / "c.db", start_block=start, page_blocks=1000)

    events = run(lambda: collect(reader))

    assert [e.args["tag"] for e in events] == list(range(6))
    assert rpc_proxy.num_refused_log_ranges > 0
    assert reader.pager.page_blocks <= 2  # remembered, so later pages are not refused again


def test_the_last_match_is_found_pages_back_and_none_when_there_is_none(w3: Web3, probe, rpc_proxy, tmp_path):
    start = w3.eth.block_number
    for tag in (7, 8, 7, 9):
        bump(w3, probe, tag, f"t{tag}")
    w3.provider.make_request("anvil_mine", [hex(10)])  # the match is pages behind the head
    rpc_proxy.max_log_range = 3  # and a page asked for is refused, halved, and the rest read
    pager = reader_for(rpc_proxy.url, probe, tmp_path / "c.db", page_blocks=4).pager
    bumped = "0x" + Web3.keccak(text="Bumped(address,uint256,uint256,string)").hex().removeprefix("0x")

    def last(tag: int, floor: int) -> ChainEvent | None:
        topics = [bumped, None, "0x" + tag.to_bytes(32, "big").hex()]  # by anyone, of this tag
        return run(lambda: pager.last_match(w3.eth.block_number, topics=topics, floor=floor))

    found = last(7, start)
    assert found is not None and found.args["note"] == "t7" and found.args["count"] == 3  # the latest 7
    assert last(5, start) is None  # every page down to the floor read, nothing matched
    assert rpc_proxy.num_refused_log_ranges > 0


def test_events_carry_their_block_s_time_whether_or_not_the_node_puts_it_in_logs(
    w3: Web3, probe, rpc_proxy, tmp_path
):
    start = w3.eth.block_number
    bump(w3, probe, 1, "a")
    bump(w3, probe, 2, "b")
    times = [w3.eth.get_block(n)["timestamp"] for n in (start + 1, start + 2)]
    with_times = run(lambda: collect(reader_for(rpc_proxy.url, probe, tmp_path / "a.db", start_block=start)))
    rpc_proxy.strip_log_timestamps = True
    calls_before = rpc_proxy.calls["eth_getBlockByNumber"]
    asked = run(lambda: collect(reader_for(rpc_proxy.url, probe, tmp_path / "b.db", start_block=start)))
    assert [e.block_time_s for e in with_times] == [e.block_time_s for e in asked] == times
    assert rpc_proxy.calls["eth_getBlockByNumber"] - calls_before == 2  # once per block, not per event


def test_logs_of_other_contracts_are_not_delivered(w3: Web3, anvil, probe, probe_artifact, tmp_path):
    start = w3.eth.block_number
    factory = w3.eth.contract(abi=probe_artifact["abi"], bytecode=probe_artifact["bytecode"])
    other = w3.eth.wait_for_transaction_receipt(factory.constructor().transact({"from": w3.eth.accounts[0]}))
    other_probe = w3.eth.contract(address=other["contractAddress"], abi=probe_artifact["abi"])
    bump(w3, other_probe, 9, "elsewhere")
    bump(w3, probe, 1, "here")
    events = run(lambda: collect(reader_for(anvil.rpc_url, probe, tmp_path / "c.db", start_block=start)))
    assert [(e.contract, e.args["note"]) for e in events] == [("Probe", "here")]


def test_run_keeps_polling_through_rpc_outages_until_stopped(w3: Web3, probe, rpc_proxy, tmp_path):
    start = w3.eth.block_number
    bump(w3, probe, 1, "first")
    reader = reader_for(rpc_proxy.url, probe, tmp_path / "c.db", start_block=start)
    reader.rpc.max_attempts = 1  # let the outage reach run() instead of the RPC retry layer
    seen: list[str] = []

    async def handler(events: list[ChainEvent]) -> None:
        seen.extend(e.args["note"] for e in events)

    async def scenario() -> None:
        stop = asyncio.Event()
        rpc_proxy.fail_next(3)
        task = asyncio.create_task(reader.run(handler, poll_interval_s=0.05, stop=stop))
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(bump, w3, probe, 2, "second")
        for _ in range(200):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        await reader.rpc.w3.provider.disconnect()

    run(scenario)
    assert seen == ["first", "second"]


def test_the_chain_client_does_not_wait_on_web3_s_process_wide_session_lock(anvil):
    """web3 8 takes one lock, shared by every provider of the process, in a thread on each async call; a
    call cancelled while waiting for it leaves it taken for good. The chain client never takes it."""
    from web3._utils.http_session_manager import HTTPSessionManager

    from cluster.chain.rpc import RpcClient

    async def calls_while_the_lock_is_taken() -> tuple[int, int]:
        w3 = connect(anvil.rpc_url)
        try:
            block = await asyncio.wait_for(w3.eth.block_number, timeout=10)  # web3's own request path
            raw = await asyncio.wait_for(RpcClient(w3).call("eth_blockNumber", []), timeout=10)
            return block, int(raw, 16)
        finally:
            await w3.provider.disconnect()

    assert HTTPSessionManager._lock.acquire(timeout=5)
    try:
        block, raw = run(calls_while_the_lock_is_taken)
    finally:
        HTTPSessionManager._lock.release()
    assert block >= 0 and raw >= 0


def test_static_words_decode_as_eth_abi_decodes_them_for_every_event_of_the_contracts():
    """The decoder reads one-word values itself (the fast path); each event of every contract, with random
    values, must decode to what eth_abi and ``normalize`` give."""
    import random

    from eth_abi import decode, encode

    from cluster.chain.artifacts import all_abis
    from cluster.chain.events import EventDecoder, event_topic
    from cluster.chain.revert import abi_type, normalize

    def value(kind: str, rng: random.Random):
        if kind == "address":
            return "0x" + rng.randbytes(20).hex()
        if kind == "bool":
            return rng.random() < 0.5
        if kind.startswith("uint"):
            return rng.getrandbits(int(kind[4:] or 256))
        if kind.startswith("int"):
            bits = int(kind[3:] or 256)
            return rng.getrandbits(bits) - (1 << (bits - 1))
        if kind.startswith("bytes") and kind[5:].isdigit():
            return rng.randbytes(int(kind[5:]))
        if kind in ("string",):
            return "x" * rng.randrange(40)
        if kind == "bytes":
            return rng.randbytes(rng.randrange(70))
        raise AssertionError(kind)

    rng = random.Random(7)
    address = "0x" + "12" * 20
    checked = 0
    for name, abi in all_abis().items():
        decoder = EventDecoder({name: (address, abi)})
        for item in abi:
            if item.get("type") != "event" or item.get("anonymous"):
                continue
            inputs = item["inputs"]
            if any("[" in abi_type(i) or abi_type(i).startswith("(") for i in inputs):
                continue  # arrays and structs go to eth_abi whole: nothing of the fast path to compare
            for _ in range(5):
                values = {i["name"]: value(abi_type(i), rng) for i in inputs}
                indexed = [i for i in inputs if i.get("indexed")]
                data = [i for i in inputs if not i.get("indexed")]
                topics = [event_topic(item)] + [encode([abi_type(i)], [values[i["name"]]]) for i in indexed]
                encoded = encode([abi_type(i) for i in data], [values[i["name"]] for i in data])
                raw = {
                    "address": address, "topics": ["0x" + t.hex() for t in topics], "blockNumber": "0x1",
                    "logIndex": "0x0", "transactionHash": "0x" + "00" * 32, "data": "0x" + encoded.hex(),
                }  # fmt: skip
                event = decoder.decode(raw)
                assert event is not None and event.name == item["name"]
                for i in inputs:
                    kind = abi_type(i)
                    if i.get("indexed") and kind in ("string", "bytes"):
                        continue  # a hash in the log
                    # eth_abi's reading of the value, normalized, is the reference
                    expected = normalize(kind, decode([kind], encode([kind], [values[i["name"]]]))[0])
                    assert event.args[i["name"]] == expected, (name, item["name"], i["name"])
                checked += 1
    assert checked > 100
