"""A stand-in for the parts of vLLM this project calls (vLLM cannot be installed here): the async engine
and the offline ``LLM`` (``engine.py``), ``SamplingParams``, ``TokensPrompt`` and the output classes,
under vLLM's own names."""

from .engine import LLM, AsyncEngineArgs, AsyncLLMEngine
from .sampling_params import SamplingParams

AsyncLLM = AsyncLLMEngine  # vLLM v1: AsyncLLMEngine is an alias of AsyncLLM
__version__ = "0.0-standin"

__all__ = ["LLM", "AsyncEngineArgs", "AsyncLLM", "AsyncLLMEngine", "SamplingParams", "__version__"]
