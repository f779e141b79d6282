"""The bridge end to end: the official openai client, the native task API, cancellation, a restart, and
the chat page in headless Chromium, against real contracts, a real relay and a real coordinator."""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest
from eth_account import Account
from PIL import Image

from cluster import envs
from cluster.protocol.gpt import TextBlock
from cluster.protocol.task import TaskType, parse_task_args
from network.bridge.config import ModelSpec
from network.bridge.errors import BridgeError
from network.bridge.openai_api import MAX_BYTES_PER_TOKEN, ChatCompletionRequest, gpt_task_args
from network.devnet.text_model import CORPUS_PATH, corpus_words, share_of_corpus_words
from tests.bridge.conftest import FUNDER, KEY, LIMITED_KEY, SECOND_WALLET, World

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello bridge"}]


def client(bridge, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{bridge.url}/v1", api_key=key, max_retries=0, timeout=120)


def wait_task(http: httpx.Client, task_id: str, until, timeout_s: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        view = http.get(f"/v1/tasks/{task_id}").raise_for_status().json()
        if until(view):
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def test_models_chat_and_stream_through_the_openai_client(bridge):
    api = client(bridge)
    models = {m.id: m for m in api.models.list().data}
    assert set(models) == {"tiny-chat", "tiny-sd"} and models["tiny-chat"].task_type == "gpt"

    completion = api.chat.completions.create(model="tiny-chat", messages=MESSAGES, seed=7, max_tokens=6,
                                             temperature=0.8)  # fmt: skip
    assert completion.object == "chat.completion" and completion.model == "tiny-chat"
    (choice,) = completion.choices
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 6 and completion.usage.total_tokens > 0

    stream = api.chat.completions.create(model="tiny-chat", messages=MESSAGES, seed=7, max_tokens=6,
                                         temperature=0.8, stream=True)  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content  # same arguments, same validated answer
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


def test_an_image_through_the_openai_client(bridge):
    images = client(bridge).images.generate(
        model="tiny-sd", prompt="a red square", n=1, size="64x64", extra_body={"seed": 3}
    )
    (image,) = images.data
    picture = Image.open(io.BytesIO(base64.b64decode(image.b64_json)))
    assert picture.format == "PNG" and picture.size == (64, 64)


def test_errors_come_in_openai_shape(world: World, bridge, tmp_path):
    api = client(bridge)
    with pytest.raises(openai.NotFoundError) as missing:
        api.chat.completions.create(model="gpt-17", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        api.chat.completions.create(model="tiny-chat", messages=MESSAGES, temperature=7)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError):
        api.images.generate(model="tiny-sd", prompt="x", size="huge")
    with pytest.raises(openai.AuthenticationError) as wrong:
        client(bridge, "sk-wrong-key").models.list()
    assert wrong.value.code == "invalid_api_key"
    limited = client(bridge, LIMITED_KEY)
    limited.models.list(), limited.models.list()  # the burst of 2
    with pytest.raises(openai.RateLimitError) as limit:
        limited.models.list()
    assert limit.value.response.headers["retry-after"] and limit.value.code == "rate_limit_exceeded"

    poor = Account.create()
    w3 = world.anvil.web3()
    w3.eth.wait_for_transaction_receipt(
        w3.eth.send_transaction({"from": FUNDER.address, "to": poor.address, "value": 10**15})
    )
    with (
        world.bridge(tmp_path / "poor", account=poor) as poor_bridge,
        pytest.raises(openai.APIStatusError) as low,
    ):
        client(poor_bridge).chat.completions.create(model="tiny-chat", messages=MESSAGES)
    assert low.value.status_code == 402 and low.value.code == "insufficient_funds"
    body = low.value.response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and "top it up" in body["message"]


def test_image_input_is_refused_before_any_task_is_paid(bridge):
    """No vision model is served: an image part (OpenAI) or an image block (native task arguments) is a
    400 naming it, not a task the nodes would only report as an error after it was paid for."""
    parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:x"}}]
    with pytest.raises(openai.BadRequestError) as bad:
        client(bridge).chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": parts}]
        )
    assert bad.value.param == "messages.0.content.1" and "text parts" in bad.value.message
    blocks = [{"type": "text", "text": "What is this?"}, {"type": "image", "base64": "iVBORw0KGgo="}]
    args = {"model": "m", "messages": [{"role": "user", "content": blocks}]}
    with httpx.Client(base_url=bridge.url, headers={"authorization": f"Bearer {KEY}"}) as http:
        refused = http.post("/v1/tasks", json={"task_type": "gpt", "task_args": args})
        assert refused.status_code == 400 and "vision model" in refused.json()["error"]["message"]
        assert http.get("/v1/tasks/none-such").status_code == 404
        # what used to be a plain-text 500: a vram_limit past SQLite's integers, a lone surrogate
        huge = http.post("/v1/tasks", json={"task_type": "gpt", "task_args": args, "vram_limit": 2**63})
        assert huge.status_code == 400 and huge.json()["error"]["param"] == "vram_limit"
        surrogate = '{"task_type": "gpt", "task_args": "{\\"model\\": \\"\\ud800\\"}"}'
        lone = http.post("/v1/tasks", content=surrogate, headers={"content-type": "application/json"})
        assert lone.status_code == 400 and "error" in lone.json()


def test_text_parts_become_text_blocks_as_crynuxs_bridge_sends_them():
    request = ChatCompletionRequest(
        model="tiny-chat",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "you"}],
            }
        ],
    )
    spec = ModelSpec(id="tiny-chat", path="tiny", task_type="gpt")
    args = parse_task_args(TaskType.GPT, gpt_task_args(request, spec))
    assert args.messages[0].content == [
        TextBlock(type="text", text="Hello, "),
        TextBlock(type="text", text="you"),
    ]


def test_a_prompt_the_models_context_cannot_hold_is_a_400():
    spec = ModelSpec(id="tiny-chat", path="tiny", task_type="gpt", context_tokens=2048)
    huge = ChatCompletionRequest(model="tiny-chat", messages=[{"role": "user", "content": "x" * (1 << 20)}])
    with pytest.raises(BridgeError) as err:
        gpt_task_args(huge, spec)
    assert err.value.status == 400 and err.value.code == "context_length_exceeded"
    fits = ChatCompletionRequest(model="tiny-chat", messages=[{"role": "user", "content": "x" * 60_000}])
    assert json.loads(gpt_task_args(fits, spec))["messages"][0]["content"] == "x" * 60_000


def test_a_prompt_that_fits_only_without_its_chat_template_is_refused_before_paying(world: World, tmp_path):
    """3,000 short messages passed the old estimate (their bytes; what the chat template adds to each
    message not counted): the nodes reported a task error and the fee was gone. The bridge counts the
    prompt as the engine does now, and refuses it before anything is paid or recorded."""
    wallet, funds = Account.create(), 10 * 10**18
    w3 = world.anvil.web3()
    w3.eth.wait_for_transaction_receipt(
        w3.eth.send_transaction({"from": FUNDER.address, "to": wallet.address, "value": funds})
    )
    chat = ModelSpec(id="tiny-chat", path=str(world.models["gpt"]), task_type="gpt", context_tokens=512,
                     defaults={"max_new_tokens": 8})  # fmt: skip
    messages = [{"role": ("user", "assistant")[i % 2], "content": "hi"} for i in range(2_999)]
    assert sum(len(m["content"]) for m in messages) // MAX_BYTES_PER_TOKEN < 512  # the old estimate passed
    with world.bridge(tmp_path, account=wallet, models=[chat]) as running:
        with pytest.raises(openai.BadRequestError) as refused:
            client(running).chat.completions.create(model="tiny-chat", messages=messages)
        assert refused.value.code == "context_length_exceeded" and "chat template" in refused.value.message
        fits = client(running).chat.completions.create(model="tiny-chat", messages=messages[:3], max_tokens=4)
        assert fits.choices[0].finish_reason in ("stop", "length")
        assert [r.id for r in running.server.config.app.state.bridge.manager.store.unfinished()] == []
    assert w3.eth.get_transaction_count(wallet.address) == 1  # the task that fit, and nothing else


def test_overdue_tasks_are_cancelled_and_refunded(world: World, tmp_path):
    # A task only three paused 80 GB nodes could take stays queued (one no joined card could ever take
    # is refused at creation); past the bridge's deadline the sweep cancels it and the fee comes back.
    w3 = world.anvil.web3()
    node = world.deployment.bind(w3).contract("Node")
    stake = node.functions.nodeStake().call()
    for big in w3.eth.accounts[27:30]:
        if node.functions.nodeStatus(big).call() == 0:  # Quit: not joined yet in this session
            w3.eth.wait_for_transaction_receipt(
                node.functions.join("Paused 80 GB card", 80, "test").transact({"from": big, "value": stake})
            )
            w3.eth.wait_for_transaction_receipt(node.functions.pause().transact({"from": big}))
    args = {
        "model": str(world.models["gpt"]),
        "messages": MESSAGES,
        "generation_config": {"max_new_tokens": 4},
    }
    with world.bridge(tmp_path / "b", account=SECOND_WALLET, task_timeout_s=1.0) as running:
        http = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        task = http.post("/v1/tasks", json={"task_type": "gpt", "task_args": args, "vram_limit": 64})
        assert task.status_code == 202, task.text
        view = wait_task(http, task.json()["id"], lambda v: v["status"] == "aborted", 30)
        assert view["reason"] == "Task Cancelled"
        # the fee back, less the queue's rent for its seconds in the queue (10% of the fee an hour)
        assert 0 <= int(view["fee_wei"]) - int(view["refund_wei"]) < int(view["fee_wei"]) // 1000
        assert http.get(f"/v1/tasks/{view['id']}/results/0").json()["error"]["code"] == "task_not_ready"
        assert w3.eth.get_balance(SECOND_WALLET.address) > 0


def test_a_task_whose_result_cannot_be_had_fails_once_with_its_reason(world: World, tmp_path, monkeypatch):
    """A relay that serves files other than the validated result: asking again cannot help, so the task
    ends failed, with the reason, at once (the first release retried any exception until the deadline,
    and a validated task has none the sweep could end)."""

    async def not_the_result(task_id: int, index: int, *, early: bool = False) -> bytes:
        return b'{"model": "x", "choices": [], "usage": {}}'

    monkeypatch.setattr(world.relay.service.files, "read_result_async", not_the_result)
    args = {"model": str(world.models["gpt"]), "messages": MESSAGES, "seed": 12,
            "generation_config": {"max_new_tokens": 4}}  # fmt: skip
    with world.bridge(tmp_path / "b") as running:
        http = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        task_id = http.post("/v1/tasks", json={"task_type": "gpt", "task_args": args}).json()["id"]
        view = wait_task(http, task_id, lambda v: v["status"] not in ("queued", "running"))
        assert view["status"] == "failed" and "ResultMismatch" in view["reason"], view
        assert "TaskSuccess" in [e["name"] for e in view["events"]]  # the chain had validated it
        refused = http.get(f"/v1/tasks/{task_id}/results/0").json()["error"]
        assert refused["code"] == "task_not_ready" and "failed" in refused["message"]


def test_a_restarted_bridge_still_returns_the_result(world: World, tmp_path):
    args = {"model": str(world.models["gpt"]), "messages": MESSAGES, "seed": 11,
            "generation_config": {"max_new_tokens": 5, "do_sample": True}}  # fmt: skip
    headers = {"Authorization": f"Bearer {KEY}"}
    world.runner.gate.clear()  # the nodes start the task but hold their results
    try:
        with world.bridge(tmp_path / "b") as first:
            http = httpx.Client(base_url=first.url, headers=headers, timeout=30)
            task_id = http.post("/v1/tasks", json={"task_type": "gpt", "task_args": args}).json()["id"]
            running = wait_task(http, task_id, lambda v: len(v["selected_nodes"]) == 3)
            assert running["status"] == "running" and running["task_id"] is not None
    finally:
        world.runner.gate.set()
    with world.bridge(tmp_path / "b") as second:
        http = httpx.Client(base_url=second.url, headers=headers, timeout=30)
        done = wait_task(http, task_id, lambda v: v["status"] == "validated")
        assert done["task_id"] == running["task_id"]  # the same chain task, not a second one
        names = [e["name"] for e in done["events"]]
        assert names.count("TaskPending") == 1 and names.count("TaskStarted") == 3 and "TaskSuccess" in names
        response = http.get(f"/v1/tasks/{task_id}/results/0").raise_for_status().json()
        assert response["choices"][0]["message"]["role"] == "assistant"
        with http.stream("GET", f"/v1/tasks/{task_id}/events") as events:
            lines = [line for line in events.iter_lines() if line.startswith("event: ")]
        assert lines[-1] == "event: done" and lines.count("event: progress") == len(names)


def test_the_chat_page_in_headless_chromium(bridge, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium: apt-get install -y chromium")
    args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(f"{bridge.url}/#key={KEY}")
            page.wait_for_selector("#model option[value='tiny-chat']", state="attached")
            page.fill("#max-tokens", "24")
            page.fill("#message", "Hello from the browser")
            page.click("#send")
            answer = page.wait_for_selector("#conversation li.assistant", timeout=90_000)
            progress = page.inner_text("#progress")
            assert "validated" in progress and progress.count("node selected") == 3
            assert "fee paid" in answer.inner_text() and "task #" in answer.inner_text()
            # the devnet's chat model answers in words of its training text (the screenshot in docs/)
            said = answer.evaluate("li => li.firstChild.textContent")
            words = corpus_words(CORPUS_PATH.read_text())
            assert len(said.split()) >= 3 and share_of_corpus_words(said, words) >= 0.8, said
            shot = tmp_path / "chat-page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.read_bytes().startswith(b"\x89PNG")
    if envs.UPDATE_SCREENSHOT.get():  # refresh docs/chat-page.png on request, not on every run
        shutil.copy(shot, DOCS / "chat-page.png")
