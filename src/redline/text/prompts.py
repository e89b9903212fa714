"""Every prompt redline sends lives in `text/templates/*.j2`; this module renders them.

Keeping the wording in template files lets users inspect and override prompts in one place
(`REDLINE_TEMPLATES=DIR` puts a directory of same-named templates first).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

_BUILTIN = Path(__file__).parent / "templates"
STEP_PREFIX = "Step "


@lru_cache(maxsize=None)
def _environment(override: str | None) -> jinja2.Environment:
    paths = ([override] if override else []) + [str(_BUILTIN)]
    return jinja2.Environment(loader=jinja2.FileSystemLoader(paths), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)


def render(name: str, **values: Any) -> str:
    """Render template `name` (without `.j2`)."""
    env = _environment(os.environ.get("REDLINE_TEMPLATES"))
    return env.get_template(f"{name}.j2").render(**values).strip()


def solve_messages(question: str, guidance: str = "") -> list[dict[str, str]]:
    """Chat messages asking for a 'Step k:' solution ending in 'The answer is N.'.

    `guidance` is extra system text from context providers (principles, examples).
    """
    system = render("solve_system", guidance=guidance)
    return [{"role": "system", "content": system}, {"role": "user", "content": render("solve_user", question=question)}]
