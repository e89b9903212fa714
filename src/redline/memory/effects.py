"""Measured effect of memory: each provider's paired effect on held-out problems, each item's record.

A learn run holds back a slice of its problems (`learning.split_holdout`) and solves each of
them bare and with every provider (firing on every problem). From those paired solves:

- a provider's effect is its accuracy minus the bare accuracy on the same problems, with the
  paired bootstrap CI that `redline eval` reports; a provider whose effect is negative is off by
  default (`MemoryPolicy`, or `force=true` on the provider, runs it anyway);
- its similarity floor is the one that would have won most problems net, had it fired only at
  or above it (ties go to the higher floor: firing less costs less); no gain at any floor means
  it never fires (`FLOOR_NEVER`). The in-sample effect at that floor is optimistic, and is
  reported as such; out-of-sample figures come from `bench/memory_providers.py`;
- an item's (principle's, banked step's, shown mistake's) record is, over the held-out solves
  that put it in the context, how many the provider won and lost against the bare solve; an
  item with more losses than wins is retired.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from redline.bench.metrics import paired_comparison
from redline.errors import SpecError
from redline.memory.store import HoldoutSolve, MemoryStore, ProviderEffect
from redline.registry import PROVIDERS, STRATEGIES
from redline.runtime import Runtime
from redline.spec import Component, parse_pipeline

FLOOR_NEVER = 2.0  # above any cosine similarity: the provider never fires
MEMORY_TRACE = "memory"  # trace node each provider leaves: similarity, floor, whether it fired, item ids
ITEM_KINDS = {"principles": "principles", "mistakes": "mistakes", "boost": "steps"}  # provider -> item table
POLICY_KEY = "memory.policy"  # where a Runtime keeps its MemoryPolicy (runtime.cached)


@dataclass
class MemoryPolicy:
    """Per runtime: whether providers measured harmful run anyway (`--allow-harmful`)."""
    allow_harmful: bool = False


def policy(runtime: Runtime) -> MemoryPolicy:
    return runtime.cached(POLICY_KEY, MemoryPolicy)


def _is_component(name: str) -> bool:
    return name in STRATEGIES or name in PROVIDERS


@lru_cache(maxsize=256)
def split_spec(spec: str) -> tuple[str, tuple[Component, ...]]:
    """(the strategy component as text, the provider components) of a pipeline spec."""
    components = parse_pipeline(spec, _is_component)
    strategy = next((str(c) for c in components if c.name in STRATEGIES), "")
    return strategy, tuple(c for c in components if c.name in PROVIDERS)


def strategy_name(spec: str) -> str:
    """The name effects are keyed by: 'stepco' for 'stepco:threshold=0.6+boost'."""
    return split_spec(spec)[0].split(":", 1)[0]


def points(x: float) -> str:
    return f"{100 * x:+.1f}"


def describe(e: ProviderEffect) -> str:
    return (f"{points(e.delta)} points vs bare {e.strategy} (95% CI [{points(e.ci_low)}, {points(e.ci_high)}]) "
            f"on {e.n} held-out problems")


def off_reason(e: ProviderEffect) -> str:
    return f"off: measured harmful, {describe(e)}; force=true or --allow-harmful runs it anyway"


# ---- reading what providers left in a solve's trace -----------------------------------------------

def _nodes(trace: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    stack = [trace]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.get("children", [])))


def items_used(trace: Mapping[str, Any], provider: str) -> list[int]:
    """Ids of the memory items `provider` put into this solve (banked steps only when a step was regenerated)."""
    ids: list[int] = []
    for node in _nodes(trace):
        if node.get("kind") == MEMORY_TRACE and node.get("provider") == provider and node.get("used"):
            ids.extend(node.get("ids", []))
        elif provider == "boost" and node.get("kind") == "boost" and "refined" in node:
            ids.extend(node.get("examples", []))
    return ids


def similarity_seen(trace: Mapping[str, Any], provider: str) -> float | None:
    """The best retrieval similarity `provider` saw in this solve (None: memory had nothing for it)."""
    return next((node.get("similarity") for node in _nodes(trace)
                 if node.get("kind") == MEMORY_TRACE and node.get("provider") == provider), None)


# ---- bookkeeping ---------------------------------------------------------------------------------

def fit_floor(pairs: Sequence[tuple[float | None, bool, bool]]) -> tuple[float, float]:
    """(floor, effect at that floor) from (similarity, bare correct, with correct) per problem: the
    floor that maximises net wins when the provider fires only at or above it."""
    fired = sorted(((s, int(w) - int(b)) for s, b, w in pairs if s is not None), key=lambda x: -x[0])
    best_gain, best_floor, gain, i = 0, FLOOR_NEVER, 0, 0
    while i < len(fired):
        level = fired[i][0]
        while i < len(fired) and fired[i][0] == level:
            gain += fired[i][1]
            i += 1
        if gain > best_gain:
            best_gain, best_floor = gain, level
    return best_floor, (best_gain / len(pairs) if pairs else 0.0)


def provider_effect(provider: str, strategy: str, bare: Mapping[int, HoldoutSolve],
                    used: Mapping[int, HoldoutSolve]) -> ProviderEffect | None:
    """The paired effect of `provider` over the held-out problems solved both ways (None: none were)."""
    ids = sorted(set(bare) & set(used))
    if not ids:
        return None
    b = [bare[i].correct for i in ids]
    w = [used[i].correct for i in ids]
    cmp = paired_comparison(provider, strategy, w, b)
    assert cmp is not None
    floor, floor_delta = fit_floor([(used[i].similarity, bare[i].correct, used[i].correct) for i in ids])
    n = len(ids)
    return ProviderEffect(provider, strategy, n, sum(b), sum(w), cmp.diff, cmp.ci[0], cmp.ci[1],
                          sum(bare[i].tokens for i in ids) / n, sum(used[i].tokens for i in ids) / n,
                          floor, floor_delta, time.time())


@dataclass
class ItemRecord:
    """An item's held-out record: solves that showed it, and how many the provider won or lost."""
    kind: str
    id: int
    uses: int = 0
    wins: int = 0
    losses: int = 0

    @property
    def net(self) -> int:
        return self.wins - self.losses


def item_records(solves: Sequence[HoldoutSolve]) -> dict[tuple[str, int], ItemRecord]:
    """Every item's record over the paired held-out solves of one strategy."""
    bare = {s.holdout_id: s for s in solves if s.provider == ""}
    records: dict[tuple[str, int], ItemRecord] = {}
    for s in solves:
        kind = ITEM_KINDS.get(s.provider)
        if kind is None or s.holdout_id not in bare:
            continue
        change = int(s.correct) - int(bare[s.holdout_id].correct)
        for item in s.items:
            rec = records.setdefault((kind, item), ItemRecord(kind, item))
            rec.uses += 1
            rec.wins += change > 0
            rec.losses += change < 0
    return records


@dataclass
class EffectsUpdate:
    effects: list[ProviderEffect] = field(default_factory=list)
    retired: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # item kind -> newly retired


def update(store: MemoryStore, strategy: str) -> EffectsUpdate:
    """Recompute every provider's effect on `strategy` from its held-out solves, store them, and retire
    the items that lost more than they won (one transaction)."""
    solves = store.holdout_solves(strategy)
    bare = {s.holdout_id: s for s in solves if s.provider == ""}
    by_provider: dict[str, dict[int, HoldoutSolve]] = defaultdict(dict)
    for s in solves:
        if s.provider:
            by_provider[s.provider][s.holdout_id] = s
    out = EffectsUpdate()
    with store.transaction():
        for provider, used in sorted(by_provider.items()):
            effect = provider_effect(provider, strategy, bare, used)
            if effect is not None:
                store.set_provider_effect(effect)
                out.effects.append(effect)
        for rec in item_records(solves).values():
            if rec.net < 0 and store.retire_item(
                    rec.kind, rec.id, f"measured effect {rec.net:+d} on held-out problems "
                                      f"({rec.wins} won, {rec.losses} lost of {rec.uses} uses with {strategy})"):
                out.retired[rec.kind] += 1
    return out


def _forced(component: Component, allow_harmful: bool) -> bool:
    """Whether a provider runs although measured harmful: `--allow-harmful`, or its `force` as its params parse it."""
    return allow_harmful or bool(getattr(PROVIDERS.validate(component), "force", False))


def provider_notes(spec: str, store: MemoryStore | None, allow_harmful: bool) -> list[str]:
    """What `solve`/`eval` tell a user who asks for providers measured harmful on this memory."""
    if store is None:
        return []
    strategy, providers = split_spec(spec)
    name = strategy.split(":", 1)[0]
    notes = []
    for component in providers:
        effect = store.provider_effect(component.name, name)
        if effect is None or not effect.harmful:
            continue
        if _forced(component, allow_harmful):
            notes.append(f"provider {component.name!r} runs although measured harmful: {describe(effect)}")
        else:
            notes.append(f"provider {component.name!r} is {off_reason(effect)}")
    return notes


def canonical(spec: str) -> str:
    """One text per pipeline, however it was spaced or ordered: the strategy, then its providers."""
    strategy, providers = split_spec(spec)
    return "+".join([strategy, *(str(c) for c in providers)])


def without_off_providers(spec: str, store: MemoryStore, allow_harmful: bool) -> str:
    """`spec` as it runs on this memory: the providers that are off dropped (they add nothing to a solve)."""
    strategy, providers = split_spec(spec)
    name = strategy.split(":", 1)[0]
    kept = []
    for component in providers:
        effect = store.provider_effect(component.name, name)
        if effect is None or not effect.harmful or _forced(component, allow_harmful):
            kept.append(str(component))
    return "+".join([strategy, *kept])


def status(e: ProviderEffect) -> str:
    """What a provider does by default, given its measurement."""
    if e.harmful:
        return "off (harmful)"
    if e.floor >= FLOOR_NEVER:
        return "abstains (no floor helped)"
    return f"on above {e.floor:.2f}"


def effect_line(e: ProviderEffect) -> str:
    """One provider's measurement in a sentence (wraps well in a narrow terminal)."""
    floor = "never" if e.floor >= FLOOR_NEVER else f"{e.floor:.2f} ({points(e.floor_delta)} points in-sample)"
    return (f"{e.provider}: {describe(e)} ({e.bare_correct / e.n:.1%} -> {e.with_correct / e.n:.1%}); tokens per "
            f"problem {e.bare_tokens:.0f} -> {e.with_tokens:.0f}; fitted floor {floor}; by default {status(e)}")


def effect_view(e: ProviderEffect) -> dict[str, Any]:
    """One provider's measurement as plain values (for `memory stats`, its JSON, and `learn`)."""
    return {"provider": e.provider, "strategy": e.strategy, "n": e.n,
            "bare_accuracy": e.bare_correct / e.n, "with_accuracy": e.with_correct / e.n,
            "delta": e.delta, "ci": [e.ci_low, e.ci_high], "bare_tokens": e.bare_tokens, "with_tokens": e.with_tokens,
            "floor": None if e.floor >= FLOOR_NEVER else e.floor, "floor_delta_in_sample": e.floor_delta,
            "default": status(e)}


def item_views(store: MemoryStore, strategy: str | None = None) -> list[dict[str, Any]]:
    """Every measured item's record with its text and whether it is retired, worst first."""
    strategies = [strategy] if strategy else sorted({e.strategy for e in store.provider_effects()})
    out = []
    for name in strategies:
        for rec in item_records(store.holdout_solves(name)).values():
            text, retired = store.item_text(rec.kind, rec.id)
            out.append({"kind": rec.kind, "id": rec.id, "strategy": name, "uses": rec.uses, "wins": rec.wins,
                        "losses": rec.losses, "net": rec.net, "retired": retired, "text": text})
    return sorted(out, key=lambda v: (v["net"], -v["uses"], v["kind"], v["id"]))


def parse_providers(text: str) -> tuple[str, ...]:
    """Provider names from a comma-separated list; an unknown one is a SpecError naming the valid ones."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise SpecError(f"unknown provider {unknown[0]!r}; valid: {', '.join(PROVIDERS.names())}")
    return names
