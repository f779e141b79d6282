"""Every environment variable the project reads or sets is listed, with its default, in cluster/envs.py."""

from __future__ import annotations

import re
from pathlib import Path

from cluster import envs

REPO = Path(__file__).resolve().parents[1]
# Where the project reads or sets a variable: its code, its Hydra configs, its scripts and manifests.
SOURCES = ["cluster", "network", "conf", "scripts", "k8s", "benchmarks", "Dockerfile"]
READS = [
    re.compile(r"os\.environ(?:\.get|\.setdefault)?\(\s*[\"']([A-Z][A-Z0-9_]+)"),
    re.compile(r"os\.environ\[\s*[\"']([A-Z][A-Z0-9_]+)"),
    re.compile(r"os\.getenv\(\s*[\"']([A-Z][A-Z0-9_]+)"),
    re.compile(r"\$\{oc\.env:([A-Z][A-Z0-9_]+)"),
    re.compile(r"\b(HELIUM_[A-Z0-9_]+)"),  # the project's own, wherever they appear (tests and docs too)
]


def _files() -> list[Path]:
    found: list[Path] = []
    for source in SOURCES:
        path = REPO / source
        found += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    found += [*(REPO / "tests").rglob("*.py"), *(REPO / "docs").rglob("*.md"), REPO / "README.md"]
    return [
        p
        for p in found
        if p.suffix in {".py", ".yaml", ".yml", ".sh", ".md", ""} and p != Path(envs.__file__)
    ]


def test_no_variable_is_read_that_envs_does_not_list() -> None:
    used: dict[str, str] = {}
    for path in _files():
        text = path.read_text(errors="replace")
        for pattern in READS:
            for name in pattern.findall(text):
                used.setdefault(name, str(path.relative_to(REPO)))
    listed = {var.name for var in envs.ALL}
    missing = {name: where for name, where in used.items() if name not in listed}
    assert not missing, f"add these to cluster/envs.py: {missing}"


def test_each_entry_says_what_it_is_for_and_reads_the_environment(monkeypatch) -> None:
    assert len({var.name for var in envs.ALL}) == len(envs.ALL)
    assert all(len(var.doc) > 10 for var in envs.ALL)
    monkeypatch.delenv("HELIUM_LOG_LEVEL", raising=False)
    assert envs.LOG_LEVEL.get() == "WARNING"
    monkeypatch.setenv("HELIUM_LOG_LEVEL", "DEBUG")
    assert envs.LOG_LEVEL.get() == "DEBUG"
