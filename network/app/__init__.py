"""The application side: buy tasks on chain, follow them, download and verify their results."""

from network.app.client import DEFAULT_TIMEOUT_S, ApplicationClient, ClientSettings
from network.app.errors import (
    ApplicationError,
    ArgumentsNotDelivered,
    ContractRejected,
    RequestConflict,
    ResultMismatch,
    TaskAbortedError,
    TaskTimeout,
    WrongChain,
)
from network.app.models import Submission, TaskOutcome
from network.app.pricing import DEFAULT_WEI_PER_SECOND, PricePolicy, fee_to_outbid
from network.app.watch import ProgressCallback

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WEI_PER_SECOND",
    "ApplicationClient",
    "ApplicationError",
    "ArgumentsNotDelivered",
    "ClientSettings",
    "ContractRejected",
    "PricePolicy",
    "ProgressCallback",
    "RequestConflict",
    "ResultMismatch",
    "Submission",
    "TaskAbortedError",
    "TaskOutcome",
    "TaskTimeout",
    "WrongChain",
    "fee_to_outbid",
]
