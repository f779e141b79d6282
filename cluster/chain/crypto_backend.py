"""Which secp256k1 backend signs and recovers: libsecp256k1 through coincurve, or eth-keys' pure Python.

eth-keys picks coincurve when it is importable and falls back to pure Python otherwise, silently. The
fallback costs about 10 ms per signature and 23 ms per recovery on these machines, against about 1 ms:
every transaction of the farm and every signed relay request pays it. The coordinator, the relay and the
bridge log the backend at start, and warn, naming the fix, when it is the slow one.
"""

from __future__ import annotations

import logging

FAST_BACKEND = "coincurve"


def signing_backend() -> str:
    """The name of the backend eth-keys signs with: "coincurve" or "native" (pure Python)."""
    from eth_keys.backends import get_backend

    return type(get_backend()).__module__.split(".")[2]  # eth_keys.backends.<name>.main


def log_signing_backend(logger: logging.Logger, who: str) -> str:
    backend = signing_backend()
    if backend == FAST_BACKEND:
        logger.info("[%s] signatures by libsecp256k1 (coincurve)", who)
    else:
        logger.warning(
            "[%s] signatures by eth-keys' pure-Python backend (%s), about 10x slower than libsecp256k1: "
            "install coincurve (`pip install coincurve`, a dependency of helium-cluster) in this environment",
            who,
            backend,
        )
    return backend
