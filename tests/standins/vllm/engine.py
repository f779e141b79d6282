"""A stand-in for vLLM's engines on the CPU: the async engine (``vllm.AsyncLLMEngine``, v1's ``AsyncLLM``)
and the offline ``vllm.LLM`` with its step-wise ``LLMEngine``.

The same calls as vLLM's: ``AsyncLLMEngine.from_engine_args(AsyncEngineArgs(...))``, the async generator
``generate(prompt, sampling_params, request_id)`` yielding cumulative ``RequestOutput`` until one is
``finished``, ``abort(request_id)``, ``shutdown()``; ``LLM(**engine_args)``, ``LLM.generate(prompts,
sampling_params)`` and ``LLM.llm_engine`` with ``add_request(request_id, prompt, params)``, ``step()``
(the outputs of the requests it advanced), ``has_unfinished_requests()`` and ``abort_request(ids)``.
Inside, a real model (transformers, on the CPU) decodes with continuous batching: before each step every
waiting request joins the running batch, one token is decoded for each running sequence, and the batch
is recorded.

Batch invariance (what ``VLLM_BATCH_INVARIANT=1`` gives on a GPU) holds here by construction: each
sequence's step is its own forward pass and its own seeded generator, so its tokens do not depend on
its batch. What this stand-in tests is the plumbing around it: that concurrent jobs reach one engine,
share its batches, await their own requests, and fail alone.

Knobs for tests (environment variables, read where a worker process has no other way in):
- ``VLLM_STANDIN_RECORD``: a file; each engine start and each step's batch is appended as a JSON line.
- ``VLLM_STANDIN_MIN_BATCH_FILE``: a file holding an integer N: when the loop starts from idle it waits
  until N requests are waiting before its first step (an event, not a timer), so a test's concurrent
  requests surely share a batch. Rewritten by the test between phases.
- ``VLLM_STANDIN_FAIL_SEED``: a request with this seed raises inside the loop at its second step, after
  it has been in a batch: one request's failure inside the engine.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cluster import envs

from .outputs import CompletionOutput, RequestOutput
from .sampling_params import SamplingParams


@dataclass
class AsyncEngineArgs:
    model: str
    tokenizer: str | None = None
    dtype: str = "auto"
    seed: int = 0
    quantization: str | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    max_num_seqs: int = 256


@dataclass(eq=False)
class _Sequence:
    index: int
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass(eq=False)
class _Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator
    sequences: list[_Sequence]
    outputs: asyncio.Queue[RequestOutput | BaseException]
    num_steps: int = 0

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.sequences)


class _Core:
    """The model and one decoding step over a batch: what both engines run."""

    def __init__(self, args: AsyncEngineArgs) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.args = args
        self.model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
        eos = GenerationConfig.from_pretrained(args.model).eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        self.max_model_len = AutoConfig.from_pretrained(args.model).max_position_embeddings
        self.batches: list[list[str]] = []  # each step's running request ids, in order
        self.min_batch = 1  # see VLLM_STANDIN_MIN_BATCH_FILE
        fail_seed = envs.VLLM_STANDIN_FAIL_SEED.get()
        self.fail_seed = int(fail_seed) if fail_seed else None
        self._waiting: list[_Request] = []
        self._running: list[_Request] = []
        self._record(
            {"event": "engine", "model": args.model, "tensor_parallel_size": args.tensor_parallel_size}
        )

    def _new_request(
        self, prompt: dict[str, Any], sampling_params: SamplingParams, request_id: str
    ) -> _Request:
        prompt_ids = list(prompt["prompt_token_ids"])
        if len(prompt_ids) > self.max_model_len:  # vLLM refuses such a prompt before scheduling it
            raise ValueError(
                f"The decoder prompt (length {len(prompt_ids)}) is longer than the maximum model length "
                f"of {self.max_model_len}."
            )
        generator = torch.Generator().manual_seed(sampling_params.seed or 0)
        sequences = [_Sequence(i) for i in range(sampling_params.n)]
        return _Request(request_id, prompt_ids, sampling_params, generator, sequences, asyncio.Queue())

    def _remove(self, request_ids: set[str]) -> None:
        self._waiting = [r for r in self._waiting if r.request_id not in request_ids]
        self._running = [r for r in self._running if r.request_id not in request_ids]

    def _next_batch(self) -> list[_Request]:
        """Continuous batching: waiting requests join the running ones before each step."""
        self._running += self._waiting
        self._waiting = []
        batch = [r.request_id for r in self._running]
        self.batches.append(batch)
        self._record({"event": "step", "batch": batch})
        return list(self._running)

    def _step(self, running: list[_Request]) -> dict[_Request, BaseException]:
        failures: dict[_Request, BaseException] = {}
        for request in running:
            request.num_steps += 1
            try:
                if (
                    request.params.seed is not None
                    and request.params.seed == self.fail_seed
                    and request.num_steps == 2
                ):
                    raise RuntimeError(
                        f"stand-in fault: request {request.request_id} failed inside the engine"
                    )
                for sequence in request.sequences:
                    if sequence.finish_reason is None:
                        self._decode_one(request, sequence)
            except Exception as exc:  # vLLM raises a request's own error from its generate()
                failures[request] = exc
        return failures

    @torch.inference_mode()
    def _decode_one(self, request: _Request, sequence: _Sequence) -> None:
        params = request.params
        ids = torch.tensor([request.prompt_ids + sequence.token_ids])
        logits = self.model(input_ids=ids).logits[0, -1].float()
        if params.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(request.prompt_ids + sequence.token_ids)))
            picked = logits[seen]
            logits[seen] = torch.where(
                picked > 0, picked / params.repetition_penalty, picked * params.repetition_penalty
            )
        if params.temperature == 0.0:
            token = int(torch.argmax(logits))
        else:
            token = self._sample(logits / params.temperature, params, request.generator)
        sequence.token_ids.append(token)
        text = self.tokenizer.decode(sequence.token_ids, skip_special_tokens=params.skip_special_tokens)
        stop = next((s for s in params.stop or [] if s in text), None)
        if token in self.eos_ids:
            sequence.finish_reason = "stop"
        elif stop is not None:
            sequence.finish_reason, sequence.stop_reason = "stop", stop
        elif params.max_tokens is not None and len(sequence.token_ids) >= params.max_tokens:
            sequence.finish_reason = "length"

    @staticmethod
    def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
        if params.top_k > 0:
            kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > params.top_p
            probs = probs.scatter(0, order[outside], 0.0)
        if params.min_p > 0.0:
            probs = probs.masked_fill(probs < params.min_p * probs.max(), 0.0)
        return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))

    def _output(self, request: _Request) -> RequestOutput:
        skip = request.params.skip_special_tokens
        completions = [
            CompletionOutput(
                s.index, self.tokenizer.decode(s.token_ids, skip_special_tokens=skip), list(s.token_ids),
                finish_reason=s.finish_reason, stop_reason=s.stop_reason,
            )
            for s in request.sequences
        ]  # fmt: skip
        return RequestOutput(
            request.request_id, None, request.prompt_ids, None, completions, request.finished
        )

    def _record(self, entry: dict[str, Any]) -> None:
        path = envs.VLLM_STANDIN_RECORD.get()
        if path:
            with open(path, "a") as f:  # one line per write: appends from several workers stay whole
                f.write(json.dumps({"pid": os.getpid(), "engine": id(self), **entry}) + "\n")


class AsyncLLMEngine(_Core):
    def __init__(self, args: AsyncEngineArgs) -> None:
        super().__init__(args)
        self._arrived = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    @classmethod
    def from_engine_args(cls, engine_args: AsyncEngineArgs) -> AsyncLLMEngine:
        return cls(engine_args)

    # --- vLLM's calls ---

    async def generate(
        self, prompt: dict[str, Any], sampling_params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        request = self._new_request(prompt, sampling_params, request_id)
        self._waiting.append(request)
        self._arrived.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run_loop())
        while True:
            output = await request.outputs.get()
            if isinstance(output, BaseException):
                raise output
            yield output
            if output.finished:
                return

    async def abort(self, request_id: str) -> None:
        self._remove({request_id})

    def shutdown(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()

    # --- the engine loop ---

    async def _run_loop(self) -> None:
        await self._hold_for_min_batch()
        while self._waiting or self._running:
            running = self._next_batch()
            failures = await asyncio.to_thread(self._step, running)  # off the loop: requests keep arriving
            for request in running:
                if request in failures:
                    request.outputs.put_nowait(failures[request])
                else:
                    request.outputs.put_nowait(self._output(request))
                if request in failures or request.finished:
                    self._running = [r for r in self._running if r is not request]

    async def _hold_for_min_batch(self) -> None:
        path = envs.VLLM_STANDIN_MIN_BATCH_FILE.get()
        min_batch = int(Path(path).read_text()) if path else self.min_batch
        while len(self._waiting) < min_batch:
            self._arrived.clear()
            await self._arrived.wait()


class LLMEngine(_Core):
    """``LLM.llm_engine``: requests added, then stepped by the caller until none is unfinished."""

    def add_request(self, request_id: str, prompt: dict[str, Any], params: SamplingParams) -> None:
        self._waiting.append(self._new_request(prompt, params, request_id))

    def has_unfinished_requests(self) -> bool:
        return bool(self._waiting or self._running)

    def abort_request(self, request_ids: list[str]) -> None:
        self._remove(set(request_ids))

    def step(self) -> list[RequestOutput]:
        """One decoding step of every running request: their outputs (finished ones leave the batch). A
        request that fails raises here, as vLLM's engine raises a request's error out of ``step``."""
        running = self._next_batch()
        failures = self._step(running)
        if failures:
            self._remove({r.request_id for r in failures})
            raise next(iter(failures.values()))
        self._running = [r for r in self._running if not r.finished]
        return [self._output(request) for request in running]


class LLM:
    """``vllm.LLM``, the offline engine: ``generate`` adds its prompts to ``llm_engine`` and steps it until
    every request finished, so they share batches as in vLLM."""

    def __init__(self, **kwargs: Any) -> None:
        self.llm_engine = LLMEngine(AsyncEngineArgs(**kwargs))

    def generate(
        self, prompts: list[dict[str, Any]], sampling_params: list[SamplingParams], use_tqdm: bool = True
    ) -> list[RequestOutput]:
        for i, (prompt, params) in enumerate(zip(prompts, sampling_params, strict=True)):
            self.llm_engine.add_request(str(i), prompt, params)
        finals: dict[str, RequestOutput] = {}
        while self.llm_engine.has_unfinished_requests():
            finals.update((o.request_id, o) for o in self.llm_engine.step() if o.finished)
        return [finals[str(i)] for i in range(len(prompts))]
