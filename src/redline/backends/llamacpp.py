"""The llama.cpp engine of the local backend: GGUF models at the speed this CPU allows.

transformers' `generate` spends about 31 ms per greedy token of the embedded model on 2 cores, where
llama.cpp spends 11 ms on the same weights: the difference is per-step overhead, not arithmetic. This
engine drives llama.cpp through the low-level bindings of `llama-cpp-python` (its high-level API has no
`n`), so that n samples share one prefill: the prompt is decoded once into sequence 0 of a context
with a unified KV cache, the other sequences share those cells (`llama_memory_seq_cp`), and then every
unfinished sequence advances one token per `llama_decode`, each sampled by its own llama.cpp sampler
chain with its own seed.

Prefix reuse: after the prefill, the prompt's KV cells are saved (`llama_state_seq_get_data`) in the
backend's `PrefixCache`; a later prompt in the same scope restores the longest stored prefix and
decodes only the rest. States live outside the context, so stored prefixes cost no attention time.

Everything here runs on the compute thread (`redline.compute`), one call at a time.
"""

from __future__ import annotations

import ctypes
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from redline.backends.base import Completion, GenerationRequest, TokenLogprob, truncate_at_stop
from redline.backends.prefix_cache import PrefixCache
from redline.errors import BackendError

TURN_MARKERS = ("<|im_end|>", "<|im_start|>")  # tuned models sometimes end a turn with the latter
_LLAMA_ERRORS: deque[str] = deque(maxlen=4)  # llama.cpp's last error lines, for the message of a failed load
_LOG_CALLBACK: Any = None  # kept alive: llama.cpp holds a pointer to it
_MIN_CTX = 4096
_BATCH = 512


def _lib() -> Any:
    """The bindings, with llama.cpp's log reduced to the error lines a failed load explains itself with."""
    global _LOG_CALLBACK
    import llama_cpp

    if _LOG_CALLBACK is None:
        def keep_errors(level: int, text: bytes, _user_data: Any) -> None:
            if level == 3:  # GGML_LOG_LEVEL_ERROR
                _LLAMA_ERRORS.append(text.decode("utf-8", "replace").strip())

        _LOG_CALLBACK = llama_cpp.llama_log_callback(keep_errors)
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


def _threads() -> int:
    """OMP_NUM_THREADS when set (one process per core, as the README advises for evals), else every core."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _last_error() -> str:
    return f" ({_LLAMA_ERRORS[-1]})" if _LLAMA_ERRORS else ""


def render_chat(template: str, messages: Sequence[dict[str, str]], bos: str, eos: str) -> str:
    """A chat template rendered as transformers' `apply_chat_template` renders it (sandboxed Jinja,
    trimmed blocks, loop controls), with the generation prompt added."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise BackendError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=list(messages), add_generation_prompt=True,
                                            bos_token=bos, eos_token=eos)


@dataclass
class _Row:
    """One sampled sequence: its sampler chain and what it has produced so far."""

    seq: int
    sampler: Any
    tokens: list[int] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str = ""


class LlamaEngine:
    """One GGUF model (optionally with a GGUF LoRA adapter) and one llama.cpp context that grows on demand."""

    def __init__(self, path: Path, lora: Path | None = None) -> None:
        lib = self.lib = _lib()
        _LLAMA_ERRORS.clear()
        if not path.is_file():
            raise BackendError(f"model file not found: {path}")
        params = lib.llama_model_default_params()
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise BackendError(f"cannot load {path}: not a readable GGUF model{_last_error()}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.lora = None
        if lora is not None:
            self.lora = lib.llama_adapter_lora_init(self.model, str(lora).encode())
            if not self.lora:
                raise BackendError(f"cannot load the LoRA adapter {lora}{_last_error()}")
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self.stop_ids = frozenset(t for t in (lib.llama_vocab_eos(self.vocab), lib.llama_vocab_eot(self.vocab),
                                              *(self._special_id(m) for m in TURN_MARKERS)) if t >= 0)
        self.chat_template = self._meta("tokenizer.chat_template")
        # rendered here, once: `render_chat` may run on any thread (a budget prices a call before it)
        self._bos, self._eos = (self.token_text(lib.llama_vocab_bos(self.vocab)),
                                self.token_text(lib.llama_vocab_eos(self.vocab)))
        self.ctx: Any = None
        self.n_ctx = 0
        self.n_seq = 0
        self._batch: Any = None

    # --- text <-> tokens -------------------------------------------------------------------------

    def _meta(self, key: str) -> str:
        size = self.lib.llama_model_meta_val_str(self.model, key.encode(), None, 0)
        if size < 0:
            return ""
        buf = ctypes.create_string_buffer(size + 1)
        self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, size + 1)
        return buf.value.decode("utf-8", "replace")

    def _special_id(self, text: str) -> int:
        ids = self.tokenize(text)
        return ids[0] if len(ids) == 1 else -1

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, special tokens such as <|im_start|> parsed, no BOS added (as the
        transformers path tokenizes a rendered prompt)."""
        data = text.encode()
        capacity = len(data) + 8
        out = (self.lib.llama_token * capacity)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), out, capacity, False, True)
        if n < 0:
            raise BackendError(f"cannot tokenize a prompt of {len(data)} bytes")
        return list(out[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token; special tokens render as empty unless `special`."""
        key = (token, special)
        if key not in self._pieces:
            n = self.lib.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
            self._pieces[key] = self._piece_buf.raw[:max(n, 0)]
        return self._pieces[key]

    def token_text(self, token: int) -> str:
        return self.piece(token, special=True).decode("utf-8", "replace")

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        if not self.chat_template:
            raise BackendError("this GGUF model has no chat template: send a raw prompt")
        return render_chat(self.chat_template, messages, self._bos, self._eos)

    # --- the context -----------------------------------------------------------------------------

    def _ensure_context(self, cells: int, sequences: int) -> None:
        """A context with at least `cells` KV cells and `sequences` sequence ids (made anew when too small)."""
        if self.ctx is not None and cells <= self.n_ctx and sequences <= self.n_seq:
            return
        lib = self.lib
        if self.ctx is not None:
            lib.llama_batch_free(self._batch)
            lib.llama_free(self.ctx)
            self.ctx = None
        n_ctx = max(_MIN_CTX, self.n_ctx, -(-cells // 1024) * 1024)
        n_seq = min(max(8, self.n_seq, sequences), lib.llama_max_parallel_sequences())
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = n_ctx, _BATCH, _BATCH, n_seq
        params.n_threads = params.n_threads_batch = _threads()
        params.kv_unified = True  # the prompt's cells are shared by every sequence
        params.no_perf = True
        ctx = lib.llama_init_from_model(self.model, params)
        if not ctx:
            raise BackendError(f"llama.cpp could not make a context of {n_ctx} tokens{_last_error()}")
        if self.lora is not None:
            adapters = (lib.llama_adapter_lora_p_ctypes * 1)(self.lora)
            if lib.llama_set_adapters_lora(ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) != 0:
                raise BackendError(f"llama.cpp could not apply the LoRA adapter{_last_error()}")
        self.ctx, self.n_ctx, self.n_seq = ctx, n_ctx, n_seq
        self._batch = lib.llama_batch_init(max(n_seq, 1), 0, 1)

    def _decode_prompt(self, ids: Sequence[int]) -> None:
        """Decode `ids` into sequence 0 after what it holds, in batches; the last token's logits are kept."""
        lib = self.lib
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start:start + _BATCH]
            array = (lib.llama_token * len(chunk))(*chunk)
            if lib.llama_decode(self.ctx, lib.llama_batch_get_one(array, len(chunk))) != 0:
                raise BackendError(f"llama.cpp failed to decode a prompt of {len(ids)} tokens{_last_error()}")

    def _decode_step(self, rows: Sequence[_Row], pos: int) -> None:
        """One token for each of `rows` (its last), all at position `pos`, each with its logits."""
        batch = self._batch
        for i, row in enumerate(rows):
            batch.token[i] = row.tokens[-1]
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = row.seq
            batch.logits[i] = True
        batch.n_tokens = len(rows)
        if self.lib.llama_decode(self.ctx, batch) != 0:
            raise BackendError(f"llama.cpp failed to decode a step of {len(rows)} sequences{_last_error()}")

    def _save(self) -> bytes:
        lib = self.lib
        size = lib.llama_state_seq_get_size(self.ctx, 0)
        buf = ctypes.create_string_buffer(size)
        written = lib.llama_state_seq_get_data(self.ctx, ctypes.cast(buf, ctypes.POINTER(ctypes.c_uint8)), size, 0)
        return buf.raw[:written]

    def _restore(self, state: bytes, tokens: int) -> bool:
        """Load a saved prompt state into sequence 0 and keep its first `tokens` positions."""
        lib = self.lib
        src = ctypes.cast(ctypes.c_char_p(state), ctypes.POINTER(ctypes.c_uint8))
        if lib.llama_state_seq_set_data(self.ctx, src, len(state), 0) == 0:
            return False
        return bool(lib.llama_memory_seq_rm(lib.llama_get_memory(self.ctx), 0, tokens, -1))

    # --- generation ------------------------------------------------------------------------------

    def _sampler(self, request: GenerationRequest, row: int) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if request.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        seed = (request.seed + row) & 0xFFFFFFFF if request.seed is not None else random.getrandbits(31)
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(request.temperature))
        if request.top_p < 1.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(request.top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    def generate(self, ids: list[int], request: GenerationRequest, rows: int,
                 cache: PrefixCache | None, scope: str) -> tuple[list[Completion], int]:
        """`rows` completions of the prompt `ids`, decoded together after one prefill.
        Returns (completions, prompt tokens restored from `cache`); prompt tokens are billed by the caller."""
        lib = self.lib
        if not ids:
            raise BackendError("empty prompt")
        if rows > lib.llama_max_parallel_sequences():
            raise BackendError(f"n={rows} is more than llama.cpp's {lib.llama_max_parallel_sequences()} "
                               "sequences per call")
        self._ensure_context(len(ids) + rows * request.max_tokens + 1, rows)
        memory = lib.llama_get_memory(self.ctx)
        t0 = time.perf_counter()
        lib.llama_memory_clear(memory, False)
        reused = 0
        if cache is not None:
            reused, state = cache.lookup(ids, scope)
            if reused and not self._restore(state, reused):
                lib.llama_memory_clear(memory, False)
                reused = 0
        self._decode_prompt(ids[reused:])
        if cache is not None:
            cache.store(ids, self._save(), scope)
        for seq in range(1, rows):
            lib.llama_memory_seq_cp(memory, 0, seq, -1, -1)
        samplers = [self._sampler(request, i) for i in range(rows)]
        try:
            out = self._decode_rows([_Row(i, s) for i, s in enumerate(samplers)], len(ids), request)
        finally:
            for sampler in samplers:
                lib.llama_sampler_free(sampler)
        latency = (time.perf_counter() - t0) / rows
        return [self._completion(row, request, latency) for row in out], reused

    def _decode_rows(self, rows: list[_Row], pos: int, request: GenerationRequest) -> list[_Row]:
        active, index = list(rows), [-1] * len(rows)  # all rows sample their first token from the prompt's logits
        while True:
            for row, idx in zip(active, index):
                token = self.lib.llama_sampler_sample(row.sampler, self.ctx, idx)
                self._take(row, token, idx, request)
            active = [row for row in active if not row.finish]
            if not active:
                return rows
            self._decode_step(active, pos)
            index, pos = list(range(len(active))), pos + 1

    def _take(self, row: _Row, token: int, idx: int, request: GenerationRequest) -> None:
        """Append a sampled token to `row` and decide whether the row is done."""
        row.tokens.append(token)
        if request.logprobs is not None:
            row.logprobs.append(self._logprob(idx, token, request.logprobs))
        if token in self.stop_ids:
            row.finish = "stop"
            return
        row.pieces.append(self.piece(token))
        if request.stop and truncate_at_stop(b"".join(row.pieces).decode("utf-8", "ignore"), request.stop)[1]:
            row.finish = "stop"
        elif len(row.tokens) >= request.max_tokens:
            row.finish = "length"

    def _logprob(self, idx: int, token: int, top_k: int) -> TokenLogprob:
        """The token's log-probability under the model's raw distribution, with the `top_k` most likely."""
        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, idx), shape=(self.n_vocab,))
        peak = float(logits.max())
        logp = logits - (peak + float(np.log(np.exp(logits - peak).sum())))
        top: dict[str, float] = {}
        if top_k:
            best = np.argpartition(-logp, top_k)[:top_k]
            top = {self.token_text(int(j)): float(logp[j]) for j in best[np.argsort(-logp[best])]}
        return TokenLogprob(self.token_text(token), float(logp[token]), top)

    def _completion(self, row: _Row, request: GenerationRequest, latency: float) -> Completion:
        text, _ = truncate_at_stop(b"".join(row.pieces).decode("utf-8", "replace"), request.stop)
        return Completion(text=text, finish_reason=row.finish, prompt_tokens=0, completion_tokens=len(row.tokens),
                          latency_s=latency, logprobs=tuple(row.logprobs) if request.logprobs is not None else None)
