"""The secp256k1 backend: libsecp256k1 here (a dependency), and a warning naming the fix where it is not."""

from __future__ import annotations

import logging

import pytest

from cluster.chain.crypto_backend import log_signing_backend, signing_backend


def test_the_project_signs_with_libsecp256k1() -> None:
    assert signing_backend() == "coincurve"


def test_the_pure_python_backend_is_named_with_its_fix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ECC_BACKEND_CLASS", "eth_keys.backends.NativeECCBackend")  # eth-keys' own switch
    logger = logging.getLogger("test.backend")
    with caplog.at_level(logging.INFO, logger="test.backend"):
        assert log_signing_backend(logger, "relay") == "native"
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "install coincurve" in record.getMessage()
    assert "[relay]" in record.getMessage()
