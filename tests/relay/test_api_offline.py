"""The relay's HTTP API with chain facts fed straight into its store: signatures, limits, no 5xx.

The end-to-end tests (test_relay_chain.py) learn the same facts from real contracts on anvil; these tests
pin down the API's own rules, including a property-based run of its OpenAPI schema.
"""

from __future__ import annotations

import hashlib
import io
import time
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import schemathesis
from eth_account import Account
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from PIL import Image

from cluster.protocol.phash import sd_result
from cluster.protocol.signing import bound_params, file_digests, sign_request
from network.relay.app import create_app
from network.relay.config import RelayConfig
from network.relay.files import FileStore
from network.relay.store import RelayStore

CREATOR, NODE, STRANGER = (Account.create() for _ in range(3))
GPT_ARGS = '{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
RESPONSE = b'{"model": "m", "choices": [], "usage": {}}'


def png(seed: int) -> bytes:
    """A noise image: different seeds give far-apart perceptual hashes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def build(tmp_path, database_url: str | None = None, **limits):
    config = RelayConfig(
        rpc_url="http://127.0.0.1:1", task_address="0x" + "00" * 20, data_dir=tmp_path,
        database_url=database_url, **limits,
    )  # fmt: skip
    store = RelayStore(config.db_url)
    return create_app(config, store, FileStore(tmp_path / "files")), store


@pytest.fixture
def api(tmp_path, database_url):
    """The API on SQLite, then on PostgreSQL."""
    app, store = build(tmp_path, database_url)
    from cluster.protocol.hashes import task_hash

    store.saw_task(1, 1, CREATOR.address, task_hash(GPT_ARGS))
    store.saw_selection(1, 0, NODE.address)
    with TestClient(app) as client:
        yield client, store
    store.close()


def signed(account, params, timestamp=None, *, files=None):
    """The timestamp and signature of the request these params belong to (its method and path bound in):
    an argument upload, a results upload (``files``), or a GET of arguments or of one result."""
    task_id = params["task_id"]
    if "task_args" in params:
        bound = bound_params("POST", "/v1/inference_tasks", params)
    elif files is not None:
        bound = bound_params("POST", f"/v1/inference_tasks/{task_id}/results", params, files)
    elif "index" in params:
        bound = bound_params("GET", f"/v1/inference_tasks/{task_id}/results/{params['index']}", params)
    else:
        bound = bound_params("GET", f"/v1/inference_tasks/{task_id}", params)
    ts, sig = sign_request(bound, account.key, timestamp)
    return {"timestamp": ts, "signature": sig}


def with_signature(account, params):
    return {**params, **signed(account, params)}


def upload(client, account, task_id=1, task_args=GPT_ARGS, **override):
    body = {"task_id": task_id, "task_args": task_args}
    return client.post("/v1/inference_tasks", json={**body, **signed(account, body), **override})


def test_signed_upload_then_download_by_a_selected_node(api):
    client, _ = api
    assert upload(client, CREATOR).status_code == 200
    got = client.get("/v1/inference_tasks/1", params=signed(NODE, {"task_id": 1}))
    assert got.status_code == 200 and got.json()["data"]["task_args"] == GPT_ARGS


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("unsigned", 400, "signature"),
        ("garbage signature", 401, "signature"),
        ("stale", 401, "from the relay's clock"),
        ("future", 401, "from the relay's clock"),
        ("wrong signer", 403, "creator"),
        ("tampered", 403, "creator"),
        ("hash differs", 400, "taskHash"),
        ("invalid args", 400, "invalid"),
        ("unknown task", 404, "not been seen"),
    ],
)
def test_argument_upload_refusals_name_the_reason_and_store_nothing(api, case, status, reason):
    client, store = api
    from cluster.protocol.hashes import task_hash

    bad_args = '{"model": "m", "messages": []}'
    store.saw_task(2, 1, CREATOR.address, task_hash(bad_args))
    body = {"task_id": 1, "task_args": GPT_ARGS}
    request = {
        "unsigned": {**body},
        "garbage signature": {**body, "timestamp": int(time.time()), "signature": "0x1234"},
        "stale": {**body, **signed(CREATOR, body, int(time.time()) - 120)},
        "future": {**body, **signed(CREATOR, body, int(time.time()) + 120)},
        "wrong signer": {**body, **signed(STRANGER, body)},
        "tampered": {**body, **signed(CREATOR, {**body, "task_args": GPT_ARGS + " "})},
        "hash differs": with_signature(CREATOR, {"task_id": 1, "task_args": GPT_ARGS + " "}),
        "invalid args": with_signature(CREATOR, {"task_id": 2, "task_args": bad_args}),
        "unknown task": with_signature(CREATOR, {"task_id": 9, "task_args": GPT_ARGS}),
    }[case]  # fmt: skip
    response = client.post("/v1/inference_tasks", json=request)
    assert response.status_code == status, response.text
    assert reason in response.json()["message"]
    assert not store.get(1).args_uploaded and not store.get(2).args_uploaded


@pytest.mark.parametrize("task_id", ["1", 1.0, True])
def test_a_task_id_that_is_not_an_integer_is_a_400_naming_it(api, task_id):
    client, store = api
    body = {"task_id": task_id, "task_args": GPT_ARGS}
    response = client.post("/v1/inference_tasks", json={**body, **signed(CREATOR, body)})
    assert response.status_code == 400 and "task_id" in response.json()["message"]
    assert not store.get(1).args_uploaded


def test_task_args_that_are_no_utf8_text_are_a_400(api):
    client, store = api
    body = '{"task_id": 1, "task_args": "\\ud800", "timestamp": 1, "signature": "0x12"}'  # a lone surrogate
    response = client.post("/v1/inference_tasks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "task_args" in response.json()["message"]
    assert not store.get(1).args_uploaded


def test_argument_download_is_refused_to_anyone_else_and_waits_for_the_upload(api):
    client, _ = api
    early = client.get("/v1/inference_tasks/1", params=signed(NODE, {"task_id": 1}))
    assert early.status_code == 404 and "not been uploaded" in early.json()["message"]
    upload(client, CREATOR)
    stranger = client.get("/v1/inference_tasks/1", params=signed(STRANGER, {"task_id": 1}))
    assert stranger.status_code == 403
    replayed_elsewhere = client.get("/v1/inference_tasks/1", params=signed(NODE, {"task_id": 2}))
    assert replayed_elsewhere.status_code == 403  # a signature for another task recovers another signer


def results_form(account, task_id, blobs, **fields):
    """A results upload's form: the fields first (the declared sha256s among them), then the files."""
    data = {
        **{k: str(v) for k, v in signed(account, {"task_id": task_id}, files=blobs).items()},
        "files_sha256": ",".join(file_digests(blobs)),
        **fields,
    }
    return {
        "data": data,
        "files": [("files", (str(i), b, "application/octet-stream")) for i, b in enumerate(blobs)],
    }


def test_results_upload_checks_the_result_node_and_the_hashes(api):
    client, store = api
    path = "/v1/inference_tasks/1/results"
    early = client.post(path, **results_form(NODE, 1, [RESPONSE]))
    assert early.status_code == 409 and "no validated result" in early.json()["message"]
    store.saw_success(1, hashlib.sha256(RESPONSE).digest(), NODE.address)

    assert client.post(path, **results_form(STRANGER, 1, [RESPONSE])).status_code == 403
    differs = client.post(path, **results_form(NODE, 1, [RESPONSE + b" "]))
    assert differs.status_code == 400 and "0.json hashes to" in differs.json()["message"]
    assert client.post(path, **results_form(NODE, 1, [RESPONSE, RESPONSE])).status_code == 400
    assert store.get(1).num_result_files == 0

    assert client.post(path, **results_form(NODE, 1, [RESPONSE])).status_code == 200
    got = client.get("/v1/inference_tasks/1/results/0", params=signed(CREATOR, {"task_id": 1, "index": 0}))
    assert got.status_code == 200 and got.content == RESPONSE
    assert (
        client.get(
            "/v1/inference_tasks/1/results/0", params=signed(NODE, {"task_id": 1, "index": 0})
        ).status_code
        == 403
    )
    beyond = client.get("/v1/inference_tasks/1/results/1", params=signed(CREATOR, {"task_id": 1, "index": 1}))
    assert beyond.status_code == 400


def test_a_signature_is_good_for_its_own_request_only(api):
    """Signatures bind the method, the path and the uploaded files' hashes: one made for a GET of the
    arguments used to be accepted for a POST of the results, and the reverse."""
    client, store = api
    store.saw_success(1, hashlib.sha256(RESPONSE).digest(), NODE.address)
    path = "/v1/inference_tasks/1/results"
    files = [("files", ("0", RESPONSE, "application/octet-stream"))]
    declared = {"files_sha256": file_digests([RESPONSE])[0]}
    for_the_get = {k: str(v) for k, v in signed(NODE, {"task_id": 1}).items()}
    assert client.post(path, data={**for_the_get, **declared}, files=files).status_code == 403
    for_other_files = {k: str(v) for k, v in signed(NODE, {"task_id": 1}, files=[b"other"]).items()}
    assert client.post(path, data={**for_other_files, **declared}, files=files).status_code == 403
    assert store.get(1).num_result_files == 0
    for_the_post = signed(NODE, {"task_id": 1}, files=[RESPONSE])
    assert client.get("/v1/inference_tasks/1", params=for_the_post).status_code == 403
    for_a_result = signed(CREATOR, {"task_id": 1, "index": 0})
    assert client.get("/v1/inference_tasks/1", params=for_a_result).status_code == 403
    # the right signatures for the same requests pass
    right = {k: str(v) for k, v in signed(NODE, {"task_id": 1}, files=[RESPONSE]).items()}
    assert client.post(path, data={**right, **declared}, files=files).status_code == 200
    assert (
        client.get("/v1/inference_tasks/1", params=signed(NODE, {"task_id": 1})).status_code == 404
    )  # no args yet


def test_sd_results_are_checked_by_perceptual_hash(api):
    client, store = api
    images = [png(10), png(200)]
    store.saw_task(3, 0, CREATOR.address, b"\x00" * 32)
    store.saw_selection(3, 1, NODE.address)
    store.saw_success(3, sd_result(images), NODE.address)
    path = "/v1/inference_tasks/3/results"
    swapped = client.post(path, **results_form(NODE, 3, images[::-1]))
    assert swapped.status_code == 400
    not_png = client.post(path, **results_form(NODE, 3, [b"not a png", images[1]]))
    assert not_png.status_code == 400 and "image 0 is not a readable image" in not_png.json()["message"]
    assert client.post(path, **results_form(NODE, 3, images)).status_code == 200
    got = client.get("/v1/inference_tasks/3/results/1", params=signed(CREATOR, {"task_id": 3, "index": 1}))
    assert got.content == images[1] and got.headers["content-type"] == "image/png"


def test_oversize_bodies_are_refused_with_413(tmp_path):
    app, store = build(tmp_path, max_args_bytes=1000, max_file_bytes=100, max_files=2)
    store.saw_task(1, 1, CREATOR.address, b"\x00" * 32)
    store.saw_success(1, b"\x00" * 32, NODE.address)
    with TestClient(app) as client:
        huge = client.post(
            "/v1/inference_tasks", content=b"x" * 500_000, headers={"content-type": "application/json"}
        )
        assert huge.status_code == 413 and "larger than the limit" in huge.json()["message"]
        big_args = upload(client, CREATOR, task_args="x" * 1500)
        assert big_args.status_code == 413
        big_file = client.post("/v1/inference_tasks/1/results", **results_form(NODE, 1, [b"y" * 101]))
        assert big_file.status_code == 413
        many = client.post("/v1/inference_tasks/1/results", **results_form(NODE, 1, [b"a", b"b", b"c"]))
        assert many.status_code == 413
    assert store.get(1).num_result_files == 0


def test_a_chunked_body_over_the_limit_is_refused(tmp_path):
    app, _ = build(tmp_path, max_args_bytes=1000, max_file_bytes=100, max_files=2)

    def chunks():
        for _ in range(100):
            yield b"x" * 10_000

    with TestClient(app) as client:
        response = client.post(
            "/v1/inference_tasks", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413


# -- a property-based run of the OpenAPI schema: whatever the input, never a 5xx -----------------------------


@pytest.fixture(scope="module")
def openapi_app(tmp_path_factory):
    app, store = build(tmp_path_factory.mktemp("relay"))
    for task_id in range(3):  # some tasks the generated ids may hit, in every state
        store.saw_task(task_id, task_id % 2, CREATOR.address, b"\x00" * 32)
    store.saw_success(1, b"\x00" * 32, NODE.address)
    return app


def test_no_input_makes_the_relay_answer_5xx(openapi_app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", openapi_app)
    failures = []
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for operation in schema.get_all_operations():
        takes_input = any(True for _ in operation.ok().iter_parameters()) or len(operation.ok().body) > 0
        for mode in modes if takes_input else modes[:1]:  # valid inputs, then inputs that break the schema

            @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.ok().as_strategy(generation_mode=mode))
            def check(case):
                response = case.call()
                if response.status_code >= 500:
                    failures.append(
                        (case.method, case.formatted_path, response.status_code, response.text[:200])
                    )

            check()
    assert failures == []


def test_the_envelope_shape_of_an_error(api):
    client, _ = api
    body = client.get("/v1/inference_tasks/abc", params={"timestamp": 1, "signature": "x"}).json()
    assert set(body) == {"message", "data"} and body["data"] is None
    _ = httpx  # the client library the cluster uses is the same one TestClient drives


def test_a_node_asking_for_a_queued_task_is_told_not_yet_not_refused(api):
    client, store = api
    store.saw_task(5, 1, CREATOR.address, b"\x00" * 32)  # in the queue: no node selected yet
    early = client.get("/v1/inference_tasks/5", params=signed(NODE, {"task_id": 5}))
    assert early.status_code == 404 and "queued" in early.json()["message"]
    store.saw_selection(5, 0, STRANGER.address)
    store.saw_selection(5, 1, CREATOR.address)
    store.saw_selection(5, 2, CREATOR.address)
    late = client.get("/v1/inference_tasks/5", params=signed(NODE, {"task_id": 5}))
    assert late.status_code == 403  # started without it: now a refusal


@pytest.mark.parametrize("spelling", ["0101", "+101", "101.0", " 101", "101 ", "1_01", "\u0661\u0660\u0661"])
def test_a_task_id_in_a_path_has_one_spelling(api, spelling):
    """A signature for /v1/inference_tasks/101 was accepted at 0101, +101, 101.0, ' 101', '101 ' and 1_01:
    they all parsed to 101. Only the canonical decimal form reaches the signature check now."""
    client, store = api
    from cluster.protocol.hashes import task_hash

    store.saw_task(101, 1, CREATOR.address, task_hash(GPT_ARGS))
    store.saw_selection(101, 0, NODE.address)
    store.saw_success(101, hashlib.sha256(RESPONSE).digest(), NODE.address)
    assert upload(client, CREATOR, task_id=101).status_code == 200
    assert (
        client.post("/v1/inference_tasks/101/results", **results_form(NODE, 101, [RESPONSE])).status_code
        == 200
    )
    canonical = client.get("/v1/inference_tasks/101", params=signed(NODE, {"task_id": 101}))
    assert canonical.status_code == 200

    segment = quote(spelling, safe="")
    refused = client.get(f"/v1/inference_tasks/{segment}", params=signed(NODE, {"task_id": 101}))
    assert refused.status_code == 400 and "task_id" in refused.json()["message"], refused.text
    result = signed(CREATOR, {"task_id": 101, "index": 0})
    assert client.get(f"/v1/inference_tasks/{segment}/results/0", params=result).status_code == 400
    assert client.get("/v1/inference_tasks/101/results/00", params=result).status_code == 400
    stamp = signed(NODE, {"task_id": 101})
    padded = {**stamp, "timestamp": "0" + str(stamp["timestamp"])}
    assert client.get("/v1/inference_tasks/101", params=padded).status_code == 400


def test_a_results_form_must_send_its_fields_before_its_files(api):
    """The relay checks the signature, over the declared sha256s, at the first file part: fields that come
    after the files, files that differ from what was declared, or a count that differs are refused."""
    client, store = api
    store.saw_success(1, hashlib.sha256(RESPONSE).digest(), NODE.address)
    path = "/v1/inference_tasks/1/results"
    form = results_form(NODE, 1, [RESPONSE])
    boundary = "b0undary"
    fields = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in form["data"].items()
    ).encode()
    file_part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="0"\r\n\r\n'.encode()
        + RESPONSE
        + b"\r\n"
    )
    end = f"--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    files_first = client.post(path, content=file_part + fields + end, headers=headers)
    assert files_first.status_code == 400 and "before the files" in files_first.json()["message"]

    lying = results_form(NODE, 1, [RESPONSE], files_sha256=hashlib.sha256(b"other").hexdigest())
    refused = client.post(path, **lying)  # signed over the declared hash, which the file does not have
    assert refused.status_code == 403  # the signature was made for the real file's hash
    declared_other = results_form(NODE, 1, [b"other"])
    declared_other["files"] = [("files", ("0", RESPONSE, "application/octet-stream"))]
    differs = client.post(path, **declared_other)
    assert differs.status_code == 400 and "hashes to" in differs.json()["message"]
    unknown = client.post(path, **results_form(NODE, 1, [RESPONSE], note="hi"))
    assert unknown.status_code == 400 and "unknown form field" in unknown.json()["message"]
    assert store.get(1).num_result_files == 0
    leftovers = [p for p in (client.app.state.relay.files.root).rglob("*") if p.is_file()]
    assert leftovers == []

    assert client.post(path, content=fields + file_part + end, headers=headers).status_code == 200
    assert store.get(1).num_result_files == 1
