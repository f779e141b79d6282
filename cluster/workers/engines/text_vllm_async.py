"""GPT tasks on vLLM's async engine (``AsyncLLMEngine``, vLLM v1's ``AsyncLLM``): the batched mode.

Each task is one request, ``generate(prompt, sampling_params, request_id)``, that its job awaits alone;
vLLM's scheduler batches the requests that are in flight at once (continuous batching). Batch
invariance (``VLLM_BATCH_INVARIANT=1``, set before the import) keeps a request's numerics independent of
its batch, and ``SamplingParams.seed`` gives it its own random stream, so a task's bytes do not depend on
what else runs. A request that fails raises in its own job only. Loading, prompts, the context check and
responses are the offline engine's (``text_vllm.VllmEngineBase``).
UNVERIFIED on a GPU: exercised only against the stand-in in ``tests/standins/vllm``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cluster.protocol.gpt import GPTTaskArgs
from cluster.workers.engines.base import TextResult
from cluster.workers.engines.deadline import JobPastDeadline, past_deadline
from cluster.workers.engines.errors import running
from cluster.workers.engines.text_vllm import VllmEngineBase, response_from_request_output


class AsyncVllmTextEngine(VllmEngineBase):
    """One async engine per model (kept in the worker's cache); ``run`` is one task's request."""

    cache_tag = "vllm-async"

    def _start(self, options: dict[str, Any]) -> Any:
        return self.api.AsyncLLMEngine.from_engine_args(self.api.AsyncEngineArgs(**options))

    async def run(self, args: GPTTaskArgs, request_id: str) -> TextResult:
        """One task as one request; raises the taxonomy's error for this task only."""
        # Loading blocks for seconds: in a thread, so the requests already in flight keep streaming.
        request = await asyncio.to_thread(self._prepare, args)
        llm = request.loaded.llm
        final, is_finished = None, False
        try:
            with running():
                async for output in llm.generate(self._prompt(request), request.sampling, request_id):
                    final, is_finished = output, output.finished
                    if past_deadline():
                        raise JobPastDeadline("the job passed its deadline while it ran: stopped")
        finally:
            if not is_finished:  # deadline, cancellation or error: free its place in vLLM's batch
                await llm.abort(request_id)
        if final is None:
            raise JobPastDeadline("vLLM returned no output for the request")
        return response_from_request_output(final, args.model, request)
