"""Every environment variable the project reads or sets, with its default and what it is for.

Code reads a variable through its entry here (``envs.LOG_LEVEL.get()``), never through a string of its
own; the Hydra files that read one (``${oc.env:...}``) name it as listed here, and a test checks that no
variable is read anywhere that this module does not list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    default: str | None
    doc: str

    def get(self) -> str | None:
        """The value in this process's environment, or the default."""
        return os.environ.get(self.name, self.default)

    def require(self) -> str:
        """The value; a clear error naming the variable when it is unset."""
        value = self.get()
        if not value:
            raise KeyError(f"set the environment variable {self.name}: {self.doc}")
        return value


# -- the farm (python -m cluster) ------------------------------------------------------------------------
STATE_DIR = EnvVar(
    "HELIUM_STATE_DIR", ".helium", "the coordinator's durable state (conf/config.yaml: state_dir)"
)
MODEL_CACHE = EnvVar(
    "HELIUM_MODEL_CACHE",
    "~/.cache/helium/models",
    "the model cache shared by a host's workers (conf/rig/cpu-devnet.yaml: rig.model_cache_dir)",
)
OPERATOR_MNEMONIC = EnvVar(
    "HELIUM_OPERATOR_MNEMONIC",
    None,
    "the operator's BIP-39 mnemonic, the farm's only secret (its name is network.operator.mnemonic_env)",
)
KEYSTORE_PASSWORD = EnvVar(
    "HELIUM_KEYSTORE_PASSWORD",
    None,
    "the password of network.operator.keystore_path (its name is network.operator.keystore_password_env)",
)
LOG_LEVEL = EnvVar("HELIUM_LOG_LEVEL", "WARNING", "log level of the coordinator actor and the devnet")
RUNTIME_TAG = EnvVar(
    "HELIUM_RUNTIME_TAG",
    None,
    "the runtime tag `python -m cluster.workers.gpu` declares (default: the text engine's own tag)",
)

# -- network=public (conf/network/public.yaml): every endpoint from the environment -----------------------
NETWORK_NAME = EnvVar("HELIUM_NETWORK_NAME", "public", "a name for the network in logs and status")
RPC_URL = EnvVar("HELIUM_RPC_URL", None, "the chain's JSON-RPC endpoint")
CHAIN_ID = EnvVar("HELIUM_CHAIN_ID", None, "the chain id the RPC must answer")
DEPLOYMENT_FILE = EnvVar("HELIUM_DEPLOYMENT_FILE", None, "the deployment JSON (addresses, first block)")
RELAY_URL = EnvVar("HELIUM_RELAY_URL", None, "the relay's base URL")
# the operator's money (conf/network/public.yaml: network.operator; docs/operations.md)
PAYOUT_ADDRESS = EnvVar("HELIUM_PAYOUT_ADDRESS", None, "where sweeps send the earnings; unset: no sweeps")
SWEEP_THRESHOLD_CNX = EnvVar(
    "HELIUM_SWEEP_THRESHOLD_CNX", "1.0", "a scheduled sweep moves a node's surplus once it is at least this"
)
SWEEP_EVERY_S = EnvVar("HELIUM_SWEEP_EVERY_S", "86400", "seconds between scheduled sweeps; 0: on demand only")
GAS_RESERVE_CNX = EnvVar("HELIUM_GAS_RESERVE_CNX", "0.1", "what each node account keeps for its gas")
GAS_RESERVE_ROUNDS = EnvVar(
    "HELIUM_GAS_RESERVE_ROUNDS", "0", "the reserve raised to this many rounds' gas at the current price"
)
OPERATOR_LOW_CNX = EnvVar(
    "HELIUM_OPERATOR_LOW_CNX", None, "below this the operator account is low; unset: one top-up of every node"
)

# -- the relay (python -m network.relay) ---------------------------------------------------------------------
RELAY_RECEIPT_KEY = EnvVar(
    "HELIUM_RELAY_RECEIPT_KEY",
    None,
    "the hex private key the relay signs its receipts of stored arguments with (its address is the Task "
    "contract's relaySigner); unset: uploads are answered without a receipt",
)

# -- the bridge and the devnet -----------------------------------------------------------------------------
BRIDGE_PORT = EnvVar("HELIUM_BRIDGE_PORT", "8090", "the devnet bridge's port (its chat page and API)")
BRIDGE_API_KEYS = EnvVar(
    "HELIUM_BRIDGE_API_KEYS", "", "comma-separated API keys of `python -m network.bridge`"
)
BRIDGE_PRIVATE_KEY = EnvVar(
    "HELIUM_BRIDGE_PRIVATE_KEY", None, "the private key of the wallet `python -m network.bridge` pays from"
)

# -- tests ---------------------------------------------------------------------------------------------
UPDATE_SCREENSHOT = EnvVar(
    "HELIUM_UPDATE_SCREENSHOT", None, "1: the browser test refreshes docs/chat-page.png"
)
KUBERAY_CRDS = EnvVar(
    "HELIUM_KUBERAY_CRDS", None, "the KubeRay CRDs the manifest tests validate against (default ../shared)"
)
ANVIL_BIN = EnvVar("ANVIL_BIN", None, "an anvil binary (default: the contracts' npm tools, then PATH)")
BENCH_CODE = EnvVar(
    "HELIUM_BENCH_CODE", None, "another checkout whose cluster benchmarks/cluster_overhead.py measures"
)
POSTGRES_BIN = EnvVar(
    "HELIUM_POSTGRES_BIN", None, "PostgreSQL's bin folder for the tests' server (default: Debian's)"
)
TEST_WORKERS = EnvVar(
    "HELIUM_TEST_WORKERS", "1", "scripts/test.sh: pytest-xdist workers (2 halves an idle machine's time)"
)
CI = EnvVar(
    "CI", None,
    "any non-empty value (.ci/run sets true): what a test needs from outside the clone (../shared, Debian's "
    "prometheus) must be there; elsewhere such a test is skipped, saying what is missing",
)  # fmt: skip
REQUIRE_POSTGRES = EnvVar(
    "HELIUM_REQUIRE_POSTGRES", None, "1 (scripts/test.sh, where installed): PostgreSQL cases fail, not skip"
)

TEST_DEVICE = EnvVar(
    "HELIUM_TEST_DEVICE", "cpu", "the engine tests' device (benchmarks/gpu_check.sh runs them with cuda)"
)
TEST_GPT_DTYPE = EnvVar(
    "HELIUM_TEST_GPT_DTYPE", "auto", "the engine tests' GPT dtype (gpu_check.sh: float16, then bfloat16)"
)
VLLM_STANDIN_RECORD = EnvVar(
    "VLLM_STANDIN_RECORD", None, "the vLLM stand-in (tests/standins) appends each batch it ran to this file"
)
VLLM_STANDIN_MIN_BATCH_FILE = EnvVar(
    "VLLM_STANDIN_MIN_BATCH_FILE", None, "a file with N: the stand-in's next batch waits for N requests"
)
VLLM_STANDIN_FAIL_SEED = EnvVar(
    "VLLM_STANDIN_FAIL_SEED", None, "the stand-in fails this seed's request inside its batch (a test fault)"
)

# -- other software's variables that the project reads or sets ---------------------------------------------
RAY_ADDRESS = EnvVar(
    "RAY_ADDRESS", None, "the Ray cluster to join (set by `ray job submit`); unset: start a local one"
)
RAY_AUTH_MODE = EnvVar(
    "RAY_AUTH_MODE", None,
    "token: Ray's token authentication; `python -m cluster status` sets it when ~/.ray/auth_token exists",
)  # fmt: skip
HF_HUB_OFFLINE = EnvVar("HF_HUB_OFFLINE", "0", "1: the model store never reaches the hub")
CUBLAS_WORKSPACE_CONFIG = EnvVar(
    "CUBLAS_WORKSPACE_CONFIG", None, "set by the workers' deterministic mode before CUDA starts"
)
CUDA_DEVICE_ORDER = EnvVar(
    "CUDA_DEVICE_ORDER", None, "set to PCI_BUS_ID by GPU workers so CUDA numbers GPUs as NVML does"
)
VLLM_BATCH_INVARIANT = EnvVar(
    "VLLM_BATCH_INVARIANT", None, "set to 1 by the vLLM engine before vLLM is imported"
)
HF_HUB_DISABLE_PROGRESS_BARS = EnvVar(
    "HF_HUB_DISABLE_PROGRESS_BARS", None, "1 (set by the tests): no download progress bars in their output"
)
TOKENIZERS_PARALLELISM = EnvVar(
    "TOKENIZERS_PARALLELISM", None, "false (set by the tests): tokenizers' threads off in forked workers"
)
PYTHONPATH = EnvVar(
    "PYTHONPATH", None, "the batched-mode tests put the vLLM stand-in (tests/standins) on their workers' path"
)
HOME = EnvVar("HOME", None, "the default model cache lies under it (~/.cache/helium/models)")

ALL: tuple[EnvVar, ...] = tuple(value for value in globals().values() if isinstance(value, EnvVar))
