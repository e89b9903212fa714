"""Training data from MCTS trees: labels and value targets on a hand-built tree, pair margins,
and `redline export --from-runs` over a real eval store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from redline.errors import RedlineError
from redline.strategies.mcts import tree_from_dict
from redline.train.tree_data import char_difference, label_tree, step_pairs, tree_rows


def node(text, q, children=(), answer=None, terminal=False, n=1):
    d = {"text": text, "Q": q, "N": n, "score": q, "terminal": terminal, "answer": answer}
    if children:
        d["children"] = list(children)
    return d


A, B, D = "Step 1: 2*3 = 6 apples in the boxes.", "Step 2: 6 - 1 = 5 apples are left. The answer is 5.", \
    "Step 2: Each box has 7 so 7 + 1 = 8. The answer is 8."
G, H, I = "Step 2: 6 - 1 = 5 apples.", "Step 3: The answer is 5.", "Step 3: The answer is 6."
C, C2 = "Step 1: First I add the two numbers: 2 + 3 = 5.", "Step 1: 2*3 = 6 apples in the box."
TREE = node("", 0.5, n=9, children=[
    node(A, 0.7, [node(B, 0.9, answer="5", terminal=True), node(D, 0.3, answer="8", terminal=True),
                  node(G, 0.6, [node(H, 0.8, answer="5", terminal=True), node(I, 0.6, answer="6", terminal=True)])]),
    node(C, 0.2, [node("Step 2: 5 - 1 = 4. The answer is 4.", 0.2, answer="4", terminal=True),
                  node("Step 2: 5 * 2 = 10", 0.3)]),  # unexplored: no terminal below, no label
    node(C2, 0.1, [node("Step 2: 6 - 2 = 4. The answer is 4.", 0.1, answer="4", terminal=True)]),
])


def by_text(root):
    return {n.text: n for n in root.walk()}


def test_hard_soft_and_value_targets_match_hand_computed_numbers():
    root = tree_from_dict(TREE)
    labels = label_tree(root, "5")
    nodes = by_text(root)

    def lab(text):
        return labels[id(nodes[text])]

    assert id(nodes["Step 2: 5 * 2 = 10"]) not in labels and id(root) not in labels
    # hard: a correct terminal below; soft: its share of the terminals below (A: B, H of B, D, H, I)
    assert [lab(t).hard for t in (A, B, D, G, H, I, C, C2)] == [True, True, False, True, True, False, False, False]
    assert [lab(t).soft for t in (A, G, C, B, D)] == [0.5, 0.5, 0.0, 1.0, 0.0]
    # d (min steps to correct): B = H = 1, G = 2, A = 2, root = 3; wrong steps inherit their
    # nearest such ancestor's d. V_k = max(0, V_{k-1} + (1 - V_{k-1}) r / d).
    expected = {A: 0 + 1 / 2,                       # 0.5
                B: 0.5 + 0.5 * 1 / 1,               # 1.0
                D: max(0.0, 0.5 - 0.5 / 2),         # 0.25 (d from A)
                G: 0.5 + 0.5 / 2,                   # 0.75
                H: 0.75 + 0.25 / 1,                 # 1.0
                I: max(0.0, 0.75 - 0.25 / 2),       # 0.625 (d from G)
                C: max(0.0, 0 - 1 / 3),             # 0 (d from the root)
                C2: 0.0}
    for text, value in expected.items():
        assert lab(text).value == pytest.approx(value), text


def test_no_value_targets_without_a_correct_terminal():
    root = tree_from_dict(TREE)
    labels = label_tree(root, "99")
    assert labels and all(m.value is None and not m.hard and m.soft == 0.0 for m in labels.values())
    rows = tree_rows("prm", "q", "99", TREE)
    assert rows and all("value_targets" not in r and not any(r["labels"]) for r in rows)


def test_pairs_obey_the_q_margin_and_the_character_difference():
    root = tree_from_dict(TREE)
    labels = label_tree(root, "5")
    pairs = [(p.text, c.text, r.text) for p, c, r in step_pairs(root, "5", labels)]
    assert pairs == [("", A, C), (A, B, D), (A, G, D)]
    # excluded: A vs C2 differ by 2 characters; H vs I are 0.2 apart in Q
    assert char_difference(A, C2) < 20 and char_difference(A, C) >= 20
    for parent, chosen, rejected in step_pairs(root, "5", labels):
        assert chosen.q - rejected.q >= 0.25 and char_difference(chosen.text, rejected.text) >= 20
        assert chosen.parent is rejected.parent is parent


def test_an_answerless_terminal_counts_as_wrong_in_the_soft_label():
    cut = "Step 2: Then she buys some more apples for the"
    tree = node("", 0.5, n=3, children=[node(A, 0.6, [node(B, 0.9, answer="5", terminal=True),
                                                      node(cut, 0.4, answer=None, terminal=True)])])
    root = tree_from_dict(tree)
    labels = label_tree(root, "5")
    nodes = by_text(root)
    assert labels[id(nodes[A])].soft == 0.5 and labels[id(nodes[A])].hard  # 1 correct of 2 terminals below
    assert (labels[id(nodes[cut])].soft, labels[id(nodes[cut])].hard) == (0.0, False)


def test_per_side_caps_the_chosen_and_rejected_steps_at_one_node():
    goods = [f"Step 1: {k} + {k} = {2 * k}, and with the remaining apples that makes 5." for k in (1, 2, 3)]
    bads = [f"Step 1: The answer is {w}, as the boxes hold {w} apples in all." for w in (7, 8, 9)]
    tree = node("", 0.5, n=6, children=[node(t, q, answer="5", terminal=True) for t, q in zip(goods, (0.9, 0.8, 0.7))]
                + [node(t, q, answer="4", terminal=True) for t, q in zip(bads, (0.3, 0.1, 0.2))])
    root = tree_from_dict(tree)
    labels = label_tree(root, "5")

    def pairs(per_side):
        return [(c.text, r.text) for _, c, r in step_pairs(root, "5", labels, per_side=per_side)]

    assert pairs(1) == [(goods[0], bads[1])]  # the highest-Q correct step against the lowest-Q wrong one
    assert pairs(2) == [(goods[0], bads[1]), (goods[0], bads[2]), (goods[1], bads[1]), (goods[1], bads[2])]
    assert len(pairs(3)) == 9 and len(list(step_pairs(root, "5", labels))) == 4  # the default keeps two a side


def test_rows_in_the_export_formats():
    prm = tree_rows("prm", "Q?", "5", TREE)
    assert len(prm) == 6  # one per terminal path
    first = prm[0]
    assert first == {"prompt": "Q?", "completions": [A, B], "labels": [True, True], "soft_labels": [0.5, 1.0],
                     "value_targets": [0.5, 1.0]}
    dpo = tree_rows("step-dpo", "Q?", "5", TREE)
    assert [r["chosen"] for r in dpo] == [A, B, G] and dpo[1]["prompt"].endswith(f"Q?\n\n{A}\n\n")
    labels = tree_rows("step-labels", "Q?", "5", TREE)
    assert labels[0] == {"question": "Q?", "steps": [A, B], "step_labels": [0.5, 1.0]}


async def test_export_from_runs_reads_mcts_trees_from_an_eval_store(tmp_path):
    from redline.bench.grading import grade
    from redline.bench.store import ResultStore
    from redline.cli import app
    from redline.loop import build_solver
    from redline.types import Problem
    from redline.verifiers.scripted import ScriptedVerifier
    from tests.conftest import scripted_runtime
    from tests.test_mcts import marked_score, tree_script

    runtime = scripted_runtime(tree_script, seed=3, verifiers={"scripted": ScriptedVerifier(marked_score)})
    problem = Problem("Tom has 2 boxes of 3 apples and eats 1. How many are left?", answer="5", id="p1")
    result = await build_solver("mcts:verifier=scripted,k=3,sims=3", runtime).solve(problem)
    run = tmp_path / "run"
    with ResultStore(run) as store:
        store.add_problems([problem])
        store.write("mcts:verifier=scripted,k=3,sims=3", result, grade(result, "5"), "scripted")
    out = tmp_path / "pairs.jsonl"
    res = CliRunner().invoke(app, ["export", "--from-runs", str(run), "-f", "prm", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all({"prompt", "completions", "labels"} <= set(r) for r in rows)  # 4 terminals
    assert "1 trees" in res.output
    bad = CliRunner().invoke(app, ["export", "--from-runs", str(tmp_path / "nope"), "-f", "prm", "-o", str(out)])
    assert isinstance(bad.exception, RedlineError) and "no eval run" in str(bad.exception)  # main(): one line, exit 2
