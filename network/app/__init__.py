"""The application side: buy tasks on chain, follow them, download and verify their results."""

from cluster.chain.contracts import Validation
from network.app.client import DEFAULT_TIMEOUT_S, ApplicationClient, ClientSettings
from network.app.errors import (
    ApplicationError,
    ArgumentsNotDelivered,
    ContractRejected,
    RequestConflict,
    ResultMismatch,
    SampledFeeTooHigh,
    TaskAbortedError,
    TaskTimeout,
    WrongChain,
)
from network.app.models import Submission, TaskOutcome
from network.app.pricing import DEFAULT_WEI_PER_SECOND, AuditTerms, PricePolicy, fee_to_outbid
from network.app.watch import ProgressCallback

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WEI_PER_SECOND",
    "ApplicationClient",
    "ApplicationError",
    "ArgumentsNotDelivered",
    "AuditTerms",
    "ClientSettings",
    "ContractRejected",
    "PricePolicy",
    "ProgressCallback",
    "RequestConflict",
    "ResultMismatch",
    "SampledFeeTooHigh",
    "Submission",
    "TaskAbortedError",
    "TaskOutcome",
    "TaskTimeout",
    "Validation",
    "WrongChain",
    "fee_to_outbid",
]
