"""The protocol core shared by every part: task models, hashes, commitments, request signing, errors."""

from cluster.protocol.errors import (
    ArgumentsInvalid,
    ErrorAction,
    ErrorCode,
    ExecutionError,
    ModelInvalid,
    ModelNotAvailable,
    OutOfMemory,
    TaskExecutionError,
    error_from_dict,
)
from cluster.protocol.gpt import GPTGenerationConfig, GPTTaskArgs, GPTTaskResponse, Message
from cluster.protocol.hashes import (
    card_model_key,
    commitment,
    gpt_response_bytes,
    gpt_result,
    gpu_vram_gb,
    new_nonce,
    task_hash,
)
from cluster.protocol.phash import gpt_results_match, phash_bytes, sd_result, sd_results_match
from cluster.protocol.sd import SDTaskArgs
from cluster.protocol.signing import SignatureInvalid, SignatureRefusal, sign_request, verify_request
from cluster.protocol.task import TaskArgs, TaskType, check_within_cap, parse_task_args, task_cap

__all__ = [
    "ArgumentsInvalid",
    "ErrorAction",
    "ErrorCode",
    "ExecutionError",
    "GPTGenerationConfig",
    "GPTTaskArgs",
    "GPTTaskResponse",
    "Message",
    "ModelInvalid",
    "ModelNotAvailable",
    "OutOfMemory",
    "SDTaskArgs",
    "SignatureInvalid",
    "SignatureRefusal",
    "TaskArgs",
    "TaskExecutionError",
    "TaskType",
    "card_model_key",
    "check_within_cap",
    "commitment",
    "error_from_dict",
    "gpt_response_bytes",
    "gpt_result",
    "gpt_results_match",
    "gpu_vram_gb",
    "new_nonce",
    "parse_task_args",
    "phash_bytes",
    "sd_result",
    "sd_results_match",
    "sign_request",
    "task_cap",
    "task_hash",
    "verify_request",
]
