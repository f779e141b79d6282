"""Reads contract events page by page from a persisted block cursor.

Delivery is at least once, in chain order (block, then log index): a page is handed to the consumer and
only then is the cursor moved past it. A crash between the two replays that page after the restart, so
consumers apply events idempotently (the relay upserts by task id; the coordinator's task state machine
ignores transitions it has already made). A consumer that keeps its own database may instead store the
cursor in the same transaction as its effects, through ``CursorStore``'s connection-free interface.

Only blocks at least ``confirmations`` deep are read, so a reorg shallower than that never reaches a
consumer. Providers that cap eth_getLogs ranges are met by halving the page until it is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eth_abi import decode
from eth_hash.auto import keccak
from web3 import AsyncWeb3

from cluster.chain.checksums import checksum_address
from cluster.chain.revert import abi_type, normalize
from cluster.chain.rpc import RpcClient, RpcError, TransientRpcError, hex_int
from cluster.durable_sqlite import open_durable

log = logging.getLogger(__name__)

# eth_getLogs topic filters: per position, a topic, any of several, or anything (None).
Topics = list[str | list[str] | None]
# Phrases providers use when a log query spans too many blocks or returns too many logs.
RANGE_TOO_LARGE_PHRASES = ("block range", "range too large", "exceeds max", "too many", "limit exceeded")


@dataclass(frozen=True, slots=True)
class ChainEvent:
    contract: str  # the name the reader was given for the emitting address
    name: str  # the event's name in the ABI
    args: dict[str, Any]  # decoded; indexed dynamic values (string, bytes) are their keccak hash
    block_number: int
    log_index: int
    tx_hash: str
    address: str
    block_time_s: int | None = None  # the block's timestamp (LogPager fills it in where the node omits it)

    @property
    def position(self) -> tuple[int, int]:
        return self.block_number, self.log_index


@dataclass(frozen=True, slots=True)
class _EventAbi:
    contract: str
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, type) of the topics after topic0
    data_names: tuple[str, ...]
    data_types: tuple[str, ...]
    is_static: bool = False  # every data value one word of an elementary type: read word by word


def event_topic(event_abi: Mapping[str, Any]) -> bytes:
    """topic0 of an event: keccak256 of its canonical signature."""
    signature = f"{event_abi['name']}({','.join(abi_type(i) for i in event_abi['inputs'])})"
    return keccak(signature.encode())


def _decode_topic(type_str: str, topic: bytes) -> Any:
    if type_str in ("string", "bytes") or type_str.endswith("]") or type_str.startswith("("):
        return topic  # the hash of the value: the value itself is not in the log
    return _static_word(type_str, topic)


@functools.lru_cache(maxsize=256)
def _word_decoder(type_str: str) -> Callable[[bytes], Any]:
    """How one 32-byte word of a static elementary type reads (what eth_abi gives, normalized): the
    events a farm follows are nearly all of them, and eth_abi's generic decoders cost a round about a
    millisecond at 400 rounds a second (benchmarks/results/cluster_overhead.md)."""
    if type_str.startswith("uint"):
        return lambda word: int.from_bytes(word, "big")
    if type_str.startswith("int"):
        return lambda word: int.from_bytes(word, "big", signed=True)
    if type_str == "address":
        return lambda word: checksum_address("0x" + word[12:].hex())
    if type_str == "bool":
        return lambda word: word[-1] == 1
    if type_str.startswith("bytes") and type_str[5:].isdigit():
        size = int(type_str[5:])
        return lambda word: word[:size]
    return lambda word: normalize(type_str, decode([type_str], word)[0])


def _static_word(type_str: str, word: bytes) -> Any:
    return _word_decoder(type_str)(word)


def _is_static(type_str: str) -> bool:
    """An elementary type of one word (the fast path); arrays, tuples, string and bytes go to eth_abi."""
    return type_str in ("address", "bool") or (
        type_str.startswith(("uint", "int", "bytes")) and type_str[-1].isdigit() and "[" not in type_str
    )


@dataclass
class EventDecoder:
    """Decodes raw logs of known contracts; logs of unknown addresses or events are skipped."""

    contracts: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]]  # name -> (address, abi)
    _by_key: dict[tuple[str, bytes], _EventAbi] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for contract, (address, abi) in self.contracts.items():
            for item in abi:
                if item.get("type") != "event" or item.get("anonymous"):
                    continue
                inputs = item["inputs"]
                entry = _EventAbi(
                    contract=contract,
                    name=item["name"],
                    indexed=tuple((i["name"], abi_type(i)) for i in inputs if i.get("indexed")),
                    data_names=tuple(i["name"] for i in inputs if not i.get("indexed")),
                    data_types=tuple(abi_type(i) for i in inputs if not i.get("indexed")),
                    is_static=all(_is_static(abi_type(i)) for i in inputs if not i.get("indexed")),
                )
                self._by_key[(checksum_address(address), event_topic(item))] = entry

    @property
    def addresses(self) -> list[str]:
        return sorted({checksum_address(address) for address, _ in self.contracts.values()})

    def decode(self, raw: Mapping[str, Any]) -> ChainEvent | None:
        topics = [bytes.fromhex(t[2:]) for t in raw["topics"]]
        if not topics:
            return None
        address = checksum_address(raw["address"])
        entry = self._by_key.get((address, topics[0]))
        if entry is None or len(topics) - 1 != len(entry.indexed):
            return None
        args = {
            name: _decode_topic(kind, t) for (name, kind), t in zip(entry.indexed, topics[1:], strict=True)
        }
        data = bytes.fromhex(raw["data"][2:])
        if entry.is_static and len(data) == 32 * len(entry.data_types):
            for i, (name, kind) in enumerate(zip(entry.data_names, entry.data_types, strict=True)):
                args[name] = _static_word(kind, data[32 * i : 32 * i + 32])
        else:
            values = decode(list(entry.data_types), data)
            for name, kind, value in zip(entry.data_names, entry.data_types, values, strict=True):
                args[name] = normalize(kind, value)
        return ChainEvent(
            contract=entry.contract,
            name=entry.name,
            args=args,
            block_number=hex_int(raw["blockNumber"]),
            log_index=hex_int(raw["logIndex"]),
            tx_hash=raw["transactionHash"],
            address=address,
            block_time_s=hex_int(raw["blockTimestamp"]) if raw.get("blockTimestamp") else None,
        )


class CursorStore:
    """Named block cursors in SQLite: the next block each reader has yet to deliver."""

    def __init__(self, path: str | Path):
        self._lock = threading.Lock()
        self._db = open_durable(
            path, "CREATE TABLE IF NOT EXISTS block_cursor (name TEXT PRIMARY KEY, next_block INTEGER);"
        )

    def get(self, name: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT next_block FROM block_cursor WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def set(self, name: str, next_block: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO block_cursor (name, next_block) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET next_block = excluded.next_block",
                (name, next_block),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class LogPager:
    """``eth_getLogs`` over a block range, in pages a provider accepts, decoded and in chain order.

    Providers cap a query's range or its number of logs; a refused page is halved until it is accepted,
    and later pages start at the accepted size.
    """

    def __init__(self, rpc: RpcClient, decoder: EventDecoder, *, page_blocks: int = 2_000):
        if page_blocks < 1:
            raise ValueError(f"{page_blocks=} must be >= 1")
        self.rpc = rpc
        self.decoder = decoder
        self.page_blocks = page_blocks

    async def page(
        self, first: int, last: int, *, topics: Topics | None = None
    ) -> tuple[int, list[ChainEvent]]:
        """The events of one page starting at ``first`` and ending at ``last`` or earlier; returns the
        page's last block with them."""
        end = min(last, first + self.page_blocks - 1)
        while True:
            query: dict[str, Any] = {"fromBlock": hex(first), "toBlock": hex(end)}
            query["address"] = self.decoder.addresses
            if topics is not None:
                query["topics"] = topics
            try:
                raw_logs = await self.rpc.call("eth_getLogs", [query])
            except RpcError as exc:
                if end == first or not exc.message_has(*RANGE_TOO_LARGE_PHRASES):
                    raise
                end = first + (end - first) // 2
                self.page_blocks = end - first + 1  # remember: the next pages start at the accepted size
                log.info("[events] range refused, halving blocks=%d", self.page_blocks)
                continue
            events = sorted(_decoded(self.decoder, raw_logs), key=lambda e: e.position)
            return end, await self._with_block_times(events)

    async def _with_block_times(self, events: list[ChainEvent]) -> list[ChainEvent]:
        """Every event with its block's timestamp: logs carry it on anvil, geth and reth; others are
        asked once per block."""
        missing = sorted({e.block_number for e in events if e.block_time_s is None})
        if not missing:
            return events
        blocks = await asyncio.gather(
            *(self.rpc.call("eth_getBlockByNumber", [hex(n), False]) for n in missing)
        )
        times = {n: hex_int(block["timestamp"]) for n, block in zip(missing, blocks, strict=True)}
        return [
            e if e.block_time_s is not None else replace(e, block_time_s=times[e.block_number])
            for e in events
        ]

    async def all(self, first: int, last: int, *, topics: Topics | None = None) -> list[ChainEvent]:
        """Every event of ``[first, last]``, page after page."""
        events: list[ChainEvent] = []
        while first <= last:
            end, page = await self.page(first, last, topics=topics)
            events.extend(page)
            first = end + 1
        return events

    async def last_match(self, last: int, *, topics: Topics, floor: int = 0) -> ChainEvent | None:
        """The latest event matching ``topics`` in ``[floor, last]``, read a page at a time backwards: a
        lookup of one event whose block is not known (a task's TaskPending), most often a few pages back."""
        while last >= floor:
            first = max(floor, last - self.page_blocks + 1)
            events = await self.all(first, last, topics=topics)
            if events:
                return events[-1]
            last = first - 1
        return None


Handler = Callable[[list[ChainEvent]], Awaitable[None]]


class EventReader:
    """Pages through the logs of some contracts from a persisted cursor; see the module doc."""

    def __init__(
        self,
        w3: AsyncWeb3,
        decoder: EventDecoder,
        cursors: CursorStore,
        *,
        name: str,
        start_block: int = 0,
        page_blocks: int = 2_000,
        confirmations: int = 0,
        topics: Topics | None = None,
    ):
        if confirmations < 0:
            raise ValueError(f"{confirmations=} must be >= 0")
        self.rpc = RpcClient(w3)
        self.pager = LogPager(self.rpc, decoder, page_blocks=page_blocks)
        self.decoder = decoder
        self.cursors = cursors
        self.name = name
        self.start_block = start_block
        self.confirmations = confirmations
        self.topics = topics  # only these logs are asked for (e.g. a few events of a busy contract)
        self.head_seen = -1  # the chain's head at the last poll (events are read up to it - confirmations)

    @property
    def next_block(self) -> int:
        stored = self.cursors.get(self.name)
        return self.start_block if stored is None else stored

    async def safe_head(self) -> int:
        """The newest block at least ``confirmations`` deep: nothing above it is read."""
        self.head_seen = hex_int(await self.rpc.call("eth_blockNumber", []))
        return self.head_seen - self.confirmations

    async def poll(self, handler: Handler) -> int:
        """Deliver every page up to the safe head, one ``handler`` call per non-empty page.

        Returns the number of events delivered. The cursor moves after each page the handler accepted;
        an exception from the handler leaves it where it was and propagates.
        """
        delivered = 0
        head = await self.safe_head()
        while (first := self.next_block) <= head:
            last, events = await self.pager.page(first, head, topics=self.topics)
            if events:
                await handler(events)
                delivered += len(events)
            self.cursors.set(self.name, last + 1)
        return delivered

    async def run(self, handler: Handler, *, poll_interval_s: float = 1.0, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set. Handler errors propagate; RPC hiccups are logged and retried."""
        while not stop.is_set():
            try:
                await self.poll(handler)
            except (RpcError, TransientRpcError) as exc:
                log.warning("[events] poll failed reader=%s error=%s", self.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_interval_s)


def _decoded(decoder: EventDecoder, raw_logs: Iterable[Mapping[str, Any]]) -> Iterable[ChainEvent]:
    for raw in raw_logs:
        if raw.get("removed"):
            continue
        event = decoder.decode(raw)
        if event is not None:
            yield event
