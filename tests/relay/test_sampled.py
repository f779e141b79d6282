"""The relay's rules for sampled tasks (issue 28; docs/relay.md, "Sampled tasks"), on a real anvil.

A sampled task's first node uploads its files early, with the result and nonce that open its commitment
on chain; the creator reads them at once (Sampled) or after the decision (SampledResultAfterAudit), and
never when an audit decided another result: then the result node's upload is what it reads. Two tests,
each covering several rules on one chain: the draw is random, so the unaudited one creates tasks until one
draws "not audited"; a zero block hash (260 blocks on) audits the other.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest

from cluster.chain.contracts import TaskType, Validation
from cluster.protocol.hashes import task_hash
from cluster.protocol.results import task_result
from cluster.protocol.signing import bound_params, file_digests, sign_request
from cluster.relay import RelayNotReady, RelayRefused
from cluster.relay.client import RelayRequest
from network.relay.background import RunningRelay
from network.relay.schema import TaskState
from tests.contracts.net import ETHER
from tests.relay.on_chain import (
    ARGS,
    ARGS_CAP,
    CREATOR,
    NODES,
    OUTSIDER,
    RESPONSE,
    by_address,
    eventually,
    relay_config,
)  # fmt: skip
from tests.relay.on_chain import client as client_at

AUDIT_RATE = 10
WRONG = b'{"model": "tiny", "choices": ["garbage"], "usage": {}}'
R_RIGHT, R_WRONG = task_result(TaskType.GPT, [RESPONSE]), task_result(TaskType.GPT, [WRONG])


@pytest.fixture
def relay(anvil, deployment, tmp_path, database_url):
    with RunningRelay(relay_config(anvil, deployment, tmp_path, database_url)) as running:
        yield running


@pytest.fixture
def sampled_net(net):
    """The three nodes of one card model (a trio for the first node, two left for its audit), N = 10."""
    net.join_all([n.address for n in NODES])
    net.set_audit_rate(AUDIT_RATE, pool=20 * ETHER)
    return net


def create_sampled(net, validation: Validation) -> tuple[int, str]:
    """A sampled GPT task of ARGS; returns its id and its one node."""
    call = net.task.functions.createTaskWithValidation(
        int(TaskType.GPT), task_hash(ARGS), b"\0" * 32, 0, ARGS_CAP, int(validation)
    )
    receipt = net.tx(call, CREATOR.address, ETHER)
    (started,) = net.event_args(receipt, "TaskStarted")
    return started["taskId"], started["selectedNode"]


def relay_sees(store, task_id: int, check) -> None:
    """Waits until the relay's record of the task passes ``check``."""
    eventually(lambda: (task := store.get(task_id)) is not None and check(task))


def mine(net, blocks: int) -> None:
    net.w3.provider.make_request("anvil_mine", [hex(blocks)])


def attempt(relay: RunningRelay, account, call: str, *args, **kwargs):
    """One request (``wait_s=0``: no retry): its answer, or the RelayRefused / RelayNotReady it raised."""

    async def run():
        async with client_at(relay.url, account) as c:
            try:
                return await getattr(c, call)(*args, wait_s=0, **kwargs)
            except (RelayRefused, RelayNotReady) as exc:
                return exc

    return asyncio.run(run())


def patiently(relay: RunningRelay, account, call: str, *args, **kwargs):
    async def run():
        async with client_at(relay.url, account) as c:
            return await getattr(c, call)(*args, **kwargs)

    return asyncio.run(run())


def status(answer) -> int | None:
    if isinstance(answer, RelayRefused):
        return answer.status
    if isinstance(answer, RelayNotReady):
        return answer.last_status
    return 200


def test_sampled_files_are_checked_against_the_commitment_and_read_by_the_creator_at_once(sampled_net, relay):
    net, store = sampled_net, relay.service.store
    for _ in range(30):  # nine draws in ten say "not audited"
        task_id, node = create_sampled(net, Validation.SAMPLED)
        first = by_address(node)
        nonce = secrets.token_bytes(32)
        net.commit(task_id, 0, R_RIGHT, nonce=nonce)
        relay_sees(store, task_id, lambda t: t.commitment)
        assert store.get(task_id).validation is Validation.SAMPLED
        patiently(relay, first, "upload_results", task_id, [RESPONSE], sealed=(R_RIGHT, nonce))
        # The creator reads them at once; nobody else, the node included.
        assert patiently(relay, CREATOR, "get_result", task_id, 0) == RESPONSE
        assert status(attempt(relay, first, "get_result", task_id, 0)) == 403
        assert status(attempt(relay, OUTSIDER, "get_result", task_id, 0)) == 403
        mine(net, 2)
        is_drawn, is_audited = net.audit_draw(task_id)
        assert is_drawn
        if not is_audited:
            break
        finish_audit(net, task_id, R_RIGHT)  # frees the nodes; the next task draws again
    else:
        raise AssertionError("no task drew 'not audited' in 30 tries")

    # The disclosure ends the task (no upload report on this path): the early files are its result's.
    receipt = net.disclose(task_id, 0)
    assert net.event_args(receipt, "TaskSuccess") == [
        {"taskId": task_id, "result": R_RIGHT, "resultNode": node}
    ]
    relay_sees(store, task_id, lambda t: t.state is TaskState.SUCCEEDED)
    assert patiently(relay, CREATOR, "get_result", task_id, 0) == RESPONSE
    # An ordinary upload of the same result after the success changes nothing: the early set is kept.
    patiently(relay, first, "upload_results", task_id, [RESPONSE])
    assert store.get(task_id).num_result_files == 0 and store.get(task_id).num_early_files == 1


def test_an_audit_that_finds_the_first_node_wrong_never_serves_its_early_files(sampled_net, relay):
    net, store = sampled_net, relay.service.store
    task_id, node = create_sampled(net, Validation.SAMPLED_RESULT_AFTER_AUDIT)
    first = by_address(node)
    eventually(lambda: store.get(task_id))
    patiently(relay, CREATOR, "upload_args", task_id, ARGS)
    nonce = secrets.token_bytes(32)
    sealed = (R_WRONG, nonce)
    # Before its commitment: "not yet" to the first node, refused to any other.
    early = attempt(relay, first, "upload_results", task_id, [WRONG], sealed=sealed)
    assert status(early) == 409 and "commitment" in str(early)
    other = next(n for n in NODES if n.address != node)
    assert status(attempt(relay, other, "upload_results", task_id, [WRONG], sealed=sealed)) == 403
    # A node not (yet) selected is told "not yet" for the arguments of a running, unaudited sampled task.
    assert status(attempt(relay, other, "get_args", task_id)) == 404

    net.commit(task_id, 0, R_WRONG, nonce=nonce)
    relay_sees(store, task_id, lambda t: t.commitment)
    assert (
        status(attempt(relay, first, "upload_results", task_id, [WRONG], sealed=(R_WRONG, bytes(32)))) == 400
    )
    assert status(attempt(relay, first, "upload_results", task_id, [RESPONSE], sealed=sealed)) == 400
    assert status(attempt(relay, first, "upload_results", task_id, [WRONG])) == 409  # unsealed: after success
    patiently(relay, first, "upload_results", task_id, [WRONG], sealed=sealed)
    assert store.get(task_id).early_result == R_WRONG
    assert status(attempt(relay, CREATOR, "get_result", task_id, 0)) == 404  # the result after the audit

    mine(net, 260)  # blockhash(c + 1) reads 0: audited
    receipt = net.tx(net.task.functions.startAudit(task_id), CREATOR.address)
    started = net.event_args(receipt, "TaskStarted")
    assert [e["round"] for e in started] == [1, 2] and not any(any(e["taskHash"]) for e in started)
    auditors = [by_address(e["selectedNode"]) for e in started]
    # The auditors read the arguments (asking before the relay saw the audit is "not yet", not refused).
    assert [patiently(relay, a, "get_args", task_id) for a in auditors] == [ARGS, ARGS]
    assert store.get(task_id).audited and store.get(task_id).task_hash == task_hash(ARGS)
    assert status(attempt(relay, OUTSIDER, "get_args", task_id)) == 403  # the readers are final now

    net.commit(task_id, 1, R_RIGHT)
    net.commit(task_id, 2, R_RIGHT)
    receipts = [net.disclose(task_id, r) for r in (0, 1, 2)]
    (success,) = [a for r in receipts for a in net.event_args(r, "TaskSuccess")]
    assert success["result"] == R_RIGHT and success["resultNode"] != node
    relay_sees(store, task_id, lambda t: t.state is TaskState.SUCCEEDED)
    # The decision's result is not the early files': they are never served; the result node's upload is.
    assert status(attempt(relay, CREATOR, "get_result", task_id, 0)) == 404
    result_node = by_address(success["resultNode"])
    assert status(attempt(relay, result_node, "get_result", task_id, 0)) == 403
    patiently(relay, result_node, "upload_results", task_id, [RESPONSE])
    assert patiently(relay, CREATOR, "get_result", task_id, 0) == RESPONSE
    net.upload(task_id, net.selected(task_id).index(success["resultNode"]), success["resultNode"])


def finish_audit(net, task_id: int, result: bytes) -> None:
    """An audit the auditors agree with, to its end on chain (the relay is not asked)."""
    net.tx(net.task.functions.startAudit(task_id), CREATOR.address)
    net.commit(task_id, 1, result)
    net.commit(task_id, 2, result)
    receipts = [net.disclose(task_id, r) for r in (0, 1, 2)]
    (success,) = [a for r in receipts for a in net.event_args(r, "TaskSuccess")]
    net.upload(task_id, net.selected(task_id).index(success["resultNode"]), success["resultNode"])


def early_upload(relay: RunningRelay, account, task_id: int, files: list[bytes], opened: dict[str, str]):
    """An early upload whose ``result`` and ``nonce`` fields are sent as given (the client sends only well
    formed ones), signed: the relay's answer, or its refusal."""
    digests = file_digests(files)
    path = f"/v1/inference_tasks/{task_id}/results"
    timestamp, signature = sign_request(
        bound_params("POST", path, {"task_id": task_id, **opened}, files_sha256=digests), account.key
    )
    fields = {"timestamp": str(timestamp), "signature": signature, "files_sha256": ",".join(digests)}
    request = RelayRequest("POST", f"{relay.url}{path}", fields=fields | opened, files=files)

    async def run():
        async with client_at(relay.url, account) as c:
            try:
                return await c._until_ready(lambda: request, 0, "early upload")
            except (RelayRefused, RelayNotReady) as exc:
                return exc

    return asyncio.run(run())


def test_malformed_early_uploads_are_refused_saying_why_and_keep_nothing(sampled_net, relay):
    net, store = sampled_net, relay.service.store
    task_id, node = create_sampled(net, Validation.SAMPLED)
    first, nonce = by_address(node), secrets.token_bytes(32)
    net.commit(task_id, 0, b"", nonce=nonce)  # a sealed task error: the empty result
    relay_sees(store, task_id, lambda t: t.commitment)
    full_id, _ = net.create_task(CREATOR.address, TaskType.GPT)  # queued behind the sampled task's node
    relay_sees(store, full_id, lambda t: True)

    opened = {"result": "0x", "nonce": "0x" + nonce.hex()}
    cases = [
        (task_id, {"result": "0x"}, "both result and nonce"),
        (task_id, {**opened, "result": "0xAB"}, "lowercase hex"),
        (task_id, {**opened, "nonce": "0x" + nonce[:31].hex()}, "expected 32 bytes, got 31"),
        (task_id, opened, "the empty result is a sealed error"),  # it opens the commitment: no files
    ]
    for refused_task, fields, why in cases:
        answer = early_upload(relay, first, refused_task, [RESPONSE], fields)
        assert status(answer) == 400 and why in str(answer), (fields, answer)
    # A Full task takes no early upload: "not yet" until its TaskSuccess, before its form is read.
    answer = early_upload(relay, first, full_id, [RESPONSE], {**opened, "result": "0x" + R_RIGHT.hex()})
    assert status(answer) == 409 and "no validated result on chain yet" in str(answer), answer
    for kept in (store.get(task_id), store.get(full_id)):
        assert kept.early_result is None and kept.num_early_files == 0 and kept.num_result_files == 0
