"""Determinism: the same task gives the same result bytes in another process, in another order, and
under concurrent submission; only the seed changes sampled output."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cluster import envs
from cluster.protocol.phash import phash_bytes
from cluster.workers.engines.determinism import (
    CUBLAS_WORKSPACE_CONFIG,
    enable_deterministic_mode,
    is_deterministic_mode,
    seed_task,
)
from tests.engines.factories import gpt_args, greedy_args, sd_args

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_in_subprocess(task_type: str, args_json: str, tmp_path: Path, name: str) -> tuple[str, Path]:
    """Run one task through the CLI in a fresh interpreter; return its result hex and its files."""
    args_file = tmp_path / f"{name}.json"
    args_file.write_text(args_json)
    out = tmp_path / name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.workers.engines.cli",
            task_type,
            str(args_file),
            "--out",
            str(out),
            "--device",
            str(envs.TEST_DEVICE.get()),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--offline",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("result="))
    return line.removeprefix("result="), out


def test_deterministic_mode_settings() -> None:
    enable_deterministic_mode()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE_CONFIG
    assert torch.are_deterministic_algorithms_enabled() and is_deterministic_mode()
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert not torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction


def test_seed_task_resets_the_global_stream() -> None:
    seed_task(5)
    first = torch.rand(4)
    torch.rand(100)  # whatever ran before must not matter
    seed_task(5)
    assert torch.equal(torch.rand(4), first)


def test_gpt_bytes_equal_across_processes(text_engine, tiny_lm_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = gpt_args(tiny_lm_dir, seed=21, do_sample=True, num_return_sequences=2, max_new_tokens=16)
    here = text_engine.run(task)
    digests = {run_in_subprocess("gpt", task.model_dump_json(), tmp_path, f"run{i}")[0] for i in range(2)}
    assert digests == {here.result.hex()}
    assert (tmp_path / "run0" / "0.json").read_bytes() == here.files[0]


def test_concurrent_submissions_keep_each_task_bytes(
    text_engine,
    tiny_lm_dir: Path,  # type: ignore[no-untyped-def]
    tiny_lm_plain_dir: Path,
) -> None:
    tasks = [gpt_args(tiny_lm_dir, seed=s, do_sample=True) for s in range(3)] + [
        greedy_args(tiny_lm_plain_dir)
    ]
    alone = [text_engine.run(t).files for t in tasks]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda t: text_engine.run(t).files, tasks * 2))
    assert together == alone * 2


def test_different_seed_changes_sampled_bytes(text_engine, tiny_lm_dir: Path) -> None:  # type: ignore[no-untyped-def]
    results = {text_engine.run(gpt_args(tiny_lm_dir, seed=s, do_sample=True)).result for s in (1, 2)}
    assert len(results) == 2


@pytest.mark.slow
def test_sd_images_equal_across_processes(image_engine, tiny_sd_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = sd_args(tiny_sd_dir)
    here = image_engine.run(task)
    hexes, outs = zip(
        *(run_in_subprocess("sd", task.model_dump_json(), tmp_path, f"sd{i}") for i in range(2)), strict=True
    )
    assert set(hexes) == {here.result.hex()}
    for i, png in enumerate(here.images):
        assert (outs[0] / f"{i}.png").read_bytes() == png == (outs[1] / f"{i}.png").read_bytes()
        assert phash_bytes((outs[0] / f"{i}.png").read_bytes()) == phash_bytes(png)
