"""``python -m network.devnet --audit-rate N``: the owner's setting and the audit pool's seed, on the
session's chain (no farm: the devnet's whole run is test_devnet.py's)."""

from __future__ import annotations

from cluster.chain.contracts import Validation
from network.devnet.__main__ import parse
from network.devnet.stack import AUDIT_POOL_SEED_WEI, Devnet, set_audit_rate


def test_the_audit_rate_is_set_and_the_pool_seeded(w3, deployment):
    task = deployment.bind(w3).contract("Task")
    assert task.functions.auditRate().call() == 1  # the deployment's: today's protocol
    set_audit_rate(w3, deployment, 10)
    assert task.functions.auditRate().call() == 10
    assert task.functions.auditPool().call() == AUDIT_POOL_SEED_WEI


def test_the_application_samples_when_the_rate_does_unless_told(tmp_path):
    options, _ = parse(["--audit-rate", "10"])
    assert options.audit_rate == 10 and options.validation is None
    assert Devnet(tmp_path, [], audit_rate=10).validation == Validation.SAMPLED
    assert Devnet(tmp_path, []).validation == Validation.FULL
    told = Devnet(tmp_path, [], audit_rate=10, validation=Validation.SAMPLED_RESULT_AFTER_AUDIT)
    assert told.validation == Validation.SAMPLED_RESULT_AFTER_AUDIT
