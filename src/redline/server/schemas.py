"""Request bodies of the OpenAI endpoints, validated by pydantic.

Unknown fields are allowed (the OpenAI API grows; pass-through must forward them untouched);
known ones are type-checked so a bad value is a 400 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from redline.server.errors import APIError

M = TypeVar("M", bound=BaseModel)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[dict[str, Any]], None] = None

    @property
    def text(self) -> str:
        """The message's text; content parts other than text (images) are left out."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class StreamOptions(_Open):
    include_usage: bool = False


ParamKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_]\w{0,63}$")]  # a spec key, nothing to re-parse


class RedlineOptions(BaseModel):
    """`extra_body={"redline": {...}}`: choose the strategy outside `model`, ask for the trace."""

    model_config = ConfigDict(extra="forbid")
    strategy: str | None = Field(None, min_length=1)
    params: dict[ParamKey, Union[str, int, float, bool]] = Field(default_factory=dict)
    trace: bool = False


class CompletionBase(_Open):
    model: str = Field(min_length=1)
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: Union[str, list[str], None] = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    redline: RedlineOptions | None = None

    @property
    def token_limit(self) -> int | None:
        """The per-call generation cap the client asked for, under either name."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def wants_trace(self) -> bool:
        return bool(self.redline and self.redline.trace)


class ChatRequest(CompletionBase):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(CompletionBase):
    prompt: Union[str, list[str]]

    @property
    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, f"prompt: give one prompt (a string), got a list of {len(self.prompt)}", "prompt")
        return self.prompt[0]


def parse_request(model: type[M], body: dict[str, Any]) -> M:
    """Validate `body`; the first problem becomes a 400 that names the field."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise APIError(400, f"{param or 'body'}: {first['msg']}", param) from None
