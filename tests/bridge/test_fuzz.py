"""Whatever a client sends to any bridge endpoint, with or without a valid key, the bridge answers below 500
in OpenAI's error shape, keeps serving, and records no task for a refused request."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bridge.conftest import KEY
from tests.relay.test_fuzz import HEADER_VALUE, PATH_VALUE, TEXT, _segment, bodies

ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/images/generations"),
    ("POST", "/v1/tasks"),
    ("GET", "/v1/tasks/{a}"),
    ("GET", "/v1/tasks/{a}/results/{b}"),
    ("GET", "/v1/models"),
    ("POST", "/v1/llm/chat/tasks"),
]


def test_no_request_makes_the_bridge_answer_5xx_or_record_a_task(bridge):
    http = httpx.Client(base_url=bridge.url, timeout=60)
    answered: list[int] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        route=st.sampled_from(ROUTES), a=PATH_VALUE, b=PATH_VALUE,
        query=st.dictionaries(st.sampled_from(["stream", "x"]), TEXT, max_size=2),
        auth=st.sampled_from([None, f"Bearer {KEY}", "Bearer sk-wrong", "Basic x"]) | HEADER_VALUE,
        body=bodies(),
    )  # fmt: skip
    def check(route, a, b, query, auth, body):  # type: ignore[no-untyped-def]
        method, template = route
        content, content_type = body
        headers = {} if auth is None else {"authorization": auth}
        if content_type is not None:
            headers["content-type"] = content_type
        path = template.format(a=_segment(a), b=_segment(b))
        raw_query = {k: v.encode("utf-8", "surrogatepass") for k, v in query.items()}
        response = http.request(method, f"{path}?{urlencode(raw_query)}", content=content, headers=headers)
        assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        answered.append(response.status_code)

    check()
    assert http.get("/v1/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    store = bridge.server.config.app.state.bridge.manager.store
    assert store.unfinished() == [], "a refused request recorded a task"
    assert len(answered) >= 100
