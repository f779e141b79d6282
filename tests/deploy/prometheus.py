"""Debian's Prometheus for the tests: its binaries, the alert rules as the plain rules file a Prometheus
without the operator loads, and a real server scraping one target, asked through its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cluster.chain.anvil import free_port
from tests.deploy import monitoring
from tests.outside import missing

T = TypeVar("T")
INSTALL = "apt-get install prometheus (scripts/setup.sh installs it where it runs as root with apt)"


def binary(name: str) -> str:
    """``prometheus`` or ``promtool``; skipped outside CI where missing (tests/outside.py)."""
    return shutil.which(name) or missing(f"{name} (Debian's prometheus package)", INSTALL)


def write_rules_file(path: Path) -> Path:
    """The PrometheusRule's ``spec.groups`` as a rules file: what the operator hands its Prometheus."""
    path.write_text(yaml.safe_dump({"groups": monitoring.rule_groups()}, sort_keys=False))
    return path


class PrometheusServer:
    """A Prometheus scraping ``target`` (host:port) and evaluating the farm's alert rules every
    ``interval_s``, with its data in ``folder``. A context manager; ``query`` and ``api`` ask it."""

    def __init__(self, target: str, folder: Path, *, interval_s: float = 1.0):
        self.target, self.folder, self.interval_s = target, folder, interval_s
        self.url = f"http://127.0.0.1:{free_port()}"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        interval = f"{int(self.interval_s * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(write_rules_file(self.folder / "helium-rules.yaml"))],
            "scrape_configs": [{"job_name": "helium-farm", "static_configs": [{"targets": [self.target]}]}],
        }
        (self.folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        command = [
            binary("prometheus"), f"--config.file={self.folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address={self.url[7:]}",
        ]  # fmt: skip
        with (self.folder / "prometheus.log").open("wb") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.wait_for("Prometheus ready", self._is_ready, timeout_s=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=30)

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """``/api/v1/<path>``'s data; a query error raises ``PrometheusError`` with Prometheus's reason."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400 and 422 carry the reason in the same envelope
            body = json.load(exc)
        if body["status"] != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's series (a vector's samples, or a scalar as one)."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [{"value": data["result"]}]

    def wait_for(self, what: str, probe: Callable[[], T], timeout_s: float = 120) -> T:
        """Poll ``probe`` until it returns something true, and return that: Prometheus's own state
        (a scrape, an evaluation), asked again until it holds; ``timeout_s`` only bounds a broken run."""
        deadline = time.monotonic() + timeout_s
        while not (found := probe()):
            if self._proc is not None and self._proc.poll() is not None:
                log = (self.folder / "prometheus.log").read_text()[-3000:]
                raise AssertionError(f"prometheus exited while waiting for {what}:\n{log}")
            assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
            time.sleep(self.interval_s / 4)
        return found


class PrometheusError(AssertionError):
    """Prometheus answered a request with an error."""
