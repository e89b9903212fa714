"""Training data from finished MCTS trees with a gold answer (rStar-Math, ReST-MCTS*).

Every node with at least one terminal below it gets three labels:
- hard: some terminal below it (or itself) gives the gold answer;
- soft: the share of the terminals below it that give the gold answer (an answerless
  terminal counts as wrong);
- value (ReST-MCTS*, `MCTS/base.py` `get_all_value_samples_vm`):
  `V_k = max(0, V_{k-1} + (1 - V_{k-1}) * r_k / d_k)`, `V_0 = 0` at the root, where
  `r_k = +1` when the step has a correct terminal below it and `-1` otherwise, and `d_k`
  (the code's `min_steps_to_correct`) is 1 at a correct terminal, 1 + the smallest `d` of its
  children on the way to one, and for a step with no correct terminal below it the `d` of its
  nearest ancestor that has one. A correct terminal thus gets V = 1, and its ancestors climb
  towards 1 the fewer steps they are from it. As in ReST-MCTS*, a tree without any correct
  terminal gives no value targets (hard and soft labels are then all 0/False).

Step-DPO pairs (after rStar-Math): at each node, its children are the candidate next steps
after one shared prefix. Chosen: the two highest-Q children with a correct terminal below;
rejected: the two lowest-Q children with terminals below but none correct. A pair is kept
when the Q margin is at least `min_margin` (0.25) and the two steps differ in at least
`min_chars` (20) characters (the longer step's length minus the characters they share, by
difflib's matching blocks), so that a pair teaches a real difference, not a rewording.

Rows use the formats `redline export` writes: `prm` is TRL's stepwise supervision
({"prompt", "completions", "labels"}, one row per root-to-terminal path, with the soft labels
and value targets as extra columns that TRL ignores), `step-dpo` is {"prompt", "chosen",
"rejected"} with the prompt ending in the shared prefix, and `step-labels` is what the
`learned` verifier trainer reads ({"question", "steps", "step_labels"}: soft labels).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from redline.errors import RedlineError
from redline.strategies.generation import prefix_text
from redline.strategies.mcts import Node, tree_from_dict
from redline.text import answers_equal, render

TREE_FORMATS = ("prm", "step-dpo", "step-labels")


@dataclass(frozen=True)
class StepLabel:
    hard: bool
    soft: float
    value: float | None  # None when the tree has no correct terminal


def is_correct(node: Node, gold: str) -> bool:
    return node.terminal and node.answer is not None and answers_equal(node.answer, gold)


def _terminals(node: Node) -> list[Node]:
    return [n for n in node.walk() if n.terminal]


def _distances(root: Node, gold: str) -> dict[int, int]:
    """ReST-MCTS*'s min_steps_to_correct for every node with a correct terminal below."""
    out: dict[int, int] = {}

    def visit(node: Node) -> int | None:
        below = [d for d in (visit(ch) for ch in node.children) if d is not None]
        d = 1 if is_correct(node, gold) else (1 + min(below) if below else None)
        if d is not None:
            out[id(node)] = d
        return d

    visit(root)
    return out


def label_tree(root: Node, gold: str) -> dict[int, StepLabel]:
    """Labels by node id for every non-root node with a terminal below it."""
    dist = _distances(root, gold)
    labels: dict[int, StepLabel] = {}

    def visit(node: Node, value: float, inherited_d: int | None) -> None:
        for ch in node.children:
            terms = _terminals(ch)
            if not terms:
                continue
            hard = id(ch) in dist
            d = dist.get(id(ch), inherited_d)
            v = max(0.0, value + (1.0 - value) * (1 if hard else -1) / d) if dist and d else None
            labels[id(ch)] = StepLabel(hard, sum(is_correct(t, gold) for t in terms) / len(terms), v)
            visit(ch, v if v is not None else 0.0, dist.get(id(ch), inherited_d))

    visit(root, 0.0, dist.get(id(root)))
    return labels


def char_difference(a: str, b: str) -> int:
    """Characters of the longer string not shared with the other (difflib matching blocks)."""
    shared = sum(block.size for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
    return max(len(a), len(b)) - shared


def step_pairs(root: Node, gold: str, labels: Mapping[int, StepLabel], min_margin: float = 0.25,
               min_chars: int = 20, per_side: int = 2) -> Iterator[tuple[Node, Node, Node]]:
    """(shared-prefix node, chosen child, rejected child) for sibling pairs that pass the margins."""
    for node in root.walk():
        good = sorted((c for c in node.children if id(c) in labels and labels[id(c)].hard),
                      key=lambda c: c.q, reverse=True)[:per_side]
        bad = sorted((c for c in node.children if id(c) in labels and not labels[id(c)].hard),
                     key=lambda c: c.q)[:per_side]
        for chosen in good:
            for rejected in bad:
                if chosen.q - rejected.q >= min_margin and char_difference(chosen.text, rejected.text) >= min_chars:
                    yield node, chosen, rejected


def tree_rows(format: str, question: str, gold: str, tree: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of `format` that one finished tree gives."""
    root = tree_from_dict(tree)
    labels = label_tree(root, gold)
    if format == "step-dpo":
        prompt = render("solve_user", question=question)
        return [{"prompt": f"{prompt}\n\n{prefix_text(node.steps)}", "chosen": chosen.text, "rejected": rejected.text}
                for node, chosen, rejected in step_pairs(root, gold, labels)]
    rows = []
    for leaf in _terminals(root):
        path = []
        walker: Node | None = leaf
        while walker is not None and walker.parent is not None:
            path.append(walker)
            walker = walker.parent
        path.reverse()
        marks = [labels[id(n)] for n in path]
        steps = [n.text for n in path]
        if format == "prm":
            row: dict[str, Any] = {"prompt": question, "completions": steps, "labels": [m.hard for m in marks],
                                   "soft_labels": [m.soft for m in marks]}
            if all(m.value is not None for m in marks):
                row["value_targets"] = [round(m.value or 0.0, 6) for m in marks]
            rows.append(row)
        else:
            rows.append({"question": question, "steps": steps, "step_labels": [m.soft for m in marks]})
    return rows


def find_tree(trace: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The MCTS tree a stored Result trace holds, if any."""
    if trace.get("kind") == "tree":
        return trace.get("root")  # type: ignore[no-any-return]
    for child in trace.get("children", ()):
        found = find_tree(child)
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class TreeExport:
    trees: int
    rows: int
    path: Path


def export_from_runs(run_dir: Path, format: str, path: Path) -> TreeExport:
    """Write `format` rows from every MCTS tree stored in an eval run whose problem has a gold answer."""
    from redline.bench.store import ResultStore
    from redline.memory.export import write_rows

    if format not in TREE_FORMATS:
        raise RedlineError(f"unknown tree export format {format!r}; valid: {', '.join(TREE_FORMATS)}")
    store = ResultStore(run_dir, create=False)
    trees = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal trees
        for problem in store.problems():
            if not problem["gradable"]:
                continue
            for _, _, result in store.full_results(problem["id"]).values():
                tree = find_tree(result.get("trace") or {})
                if tree is not None:
                    trees += 1
                    yield from tree_rows(format, problem["question"], problem["gold"], tree)

    with store:
        report = write_rows(rows(), path)
    return TreeExport(trees, report.rows, report.path)
