"""The `redline` command: thin commands over the library. Errors print one line, exit 2."""

from __future__ import annotations

import os
import sys
from importlib import import_module

# No tqdm bars on the terminal (the GGUF dequantiser draws one at every model load): commands print
# their own progress lines. tqdm reads this once, when first imported, so it is set before any import.
os.environ.setdefault("TQDM_DISABLE", "1")

import typer  # noqa: E402

from redline.errors import RedlineError  # noqa: E402

app = typer.Typer(
    name="redline",
    help="Make any LLM reason more accurately per token: solve step by step, verify each step, "
         "correct from the first wrong one, search when it pays, and learn from mistakes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module exposes register(app); keep this list the only place commands are wired.
_COMMAND_MODULES = ("solve", "verifier", "eval", "memory", "serve", "train")
for _name in _COMMAND_MODULES:
    try:
        _module = import_module(f"redline.cli.{_name}")
    except ModuleNotFoundError as e:
        if e.name != f"redline.cli.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    try:
        app()
    except RedlineError as e:
        from redline.cli.common import console

        console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
