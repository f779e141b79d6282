"""The bridge: an application backend that holds a wallet and pays for its users' tasks.

OpenAI-compatible API (``/v1/chat/completions``, ``/v1/images/generations``, ``/v1/models``), a native
task API (``/v1/tasks``) and a chat page at ``/``. See docs/bridge.md.
"""

from network.bridge.app import create_bridge
from network.bridge.config import ApiKey, BridgeConfig, ModelSpec
from network.bridge.server import RunningBridge

__all__ = ["ApiKey", "BridgeConfig", "ModelSpec", "RunningBridge", "create_bridge"]
