"""MCTS: the pure core (UCT, selection, backup, duplicates) and the driver on the scripted backend;
one small solve on the embedded model."""

from __future__ import annotations

import json
import math
import re

import pytest

from redline.loop import build_solver
from redline.strategies.generation import StepDraft
from redline.strategies.mcts import Node, backup, novel, select, terminal_value, uct
from redline.types import Problem
from redline.verifiers.scripted import ScriptedVerifier
from tests.conftest import scripted_runtime

Q = Problem("Tom has 2 boxes of 3 apples and eats 1. How many are left?", answer="5")
MARK = re.compile(r"\[s=([\d.]+)\]")


def marked_score(question: str, i: int, step: str) -> float:
    m = MARK.search(step)
    return float(m.group(1)) if m else 0.9


def child(parent: Node, visits: int, value_sum: float, **kw) -> Node:
    node = Node(kw.pop("text", f"c{len(parent.children)}"), parent, visits=visits, value_sum=value_sum, **kw)
    parent.children.append(node)
    return node


# --- the pure core ---------------------------------------------------------------------------

def test_uct_prefers_the_less_visited_child_until_exploration_is_off():
    root = Node(visits=4, value_sum=2.0, expanded=True)
    a = child(root, 3, 1.8)  # Q 0.6
    b = child(root, 1, 0.4)  # Q 0.4
    assert uct(a, 4, 1.0) == pytest.approx(0.6 + math.sqrt(math.log(4) / 3))
    assert uct(b, 4, 1.0) == pytest.approx(0.4 + math.sqrt(math.log(4)))
    assert select(root, 1.0) is b  # 1.577 > 1.280
    assert select(root, 0.0) is a  # pure exploitation


def test_selection_skips_terminal_and_exhausted_children_and_marks_dead_ends():
    root = Node(visits=3, value_sum=1.5, expanded=True)
    done = child(root, 1, 0.9, terminal=True)
    inner = child(root, 2, 1.8, expanded=True)  # the UCT favourite (0.9 + 0.74 > 0.2 + 1.05)
    child(inner, 1, 0.1, terminal=True)
    last = child(root, 1, 0.2)
    assert select(root, 1.0) is last  # `done` is terminal; `inner` has only terminal children
    assert inner.exhausted and not done.exhausted
    last.expanded = True  # expanded with no children: nothing is left
    assert select(root, 1.0) is None and root.exhausted


def test_backup_keeps_q_the_mean_of_every_value_below():
    root = Node()
    a = Node("a", root)
    b = Node("b", a)
    backup(a, 0.8)
    backup(b, 0.2)
    backup(b, 0.5)
    assert (root.visits, a.visits, b.visits) == (3, 3, 2)
    assert root.q == pytest.approx(0.5) and a.q == pytest.approx(0.5) and b.q == pytest.approx(0.35)


def test_terminal_value_is_the_score_with_an_answer_and_zero_without():
    assert terminal_value(Node("x", score=0.7, answer="5")) == 0.7
    assert terminal_value(Node("x", score=0.7, answer=None)) == 0.0
    assert terminal_value(Node("x", score=0.7, answer="5"), gold="5.0") == 1.0
    assert terminal_value(Node("x", score=0.7, answer="4"), gold="5") == 0.0


def test_novel_drops_duplicates_truncated_and_empty_drafts():
    sibling = Node("Step 2: 6 - 1 = 5.")
    drafts = [StepDraft("Step 2: 6 - 1 =  5.", False), StepDraft("Step 2: 2*3 = 6.", False),
              StepDraft("Step 2: 2*3 = 6.", False), StepDraft("Step 2: 6 * 7 = ", False, truncated=True),
              StepDraft("Step 2:", True), StepDraft("Step 2: 6 + 1 = 7.", False)]
    assert [d.text for d in novel(drafts, [sibling])] == ["Step 2: 2*3 = 6.", "Step 2: 6 + 1 = 7."]


# --- the driver on the scripted backend --------------------------------------------------------

BRANCHES = {
    "Step 1:": [" 2*3=6 apples.", " 2*3=6 apples.", " 2*3=5 apples. [s=0.2]"],
    "6 apples.\n\nStep 2:": [" 6-1=5. The answer is 5.", " 6-1=4 [s=0.4]. The answer is 4.",
                             " 6-1=5. The answer is 5."],
    "5 apples. [s=0.2]\n\nStep 2:": [" 5-1=4. The answer is 4.", " 5-1=4 apples.", " 5-2=3. The answer is 3."],
}


def tree_script(req, i):
    for key, drafts in BRANCHES.items():
        if req.prefix.endswith(key):
            return drafts[i % 3]
    return " 4-0=4. The answer is 4."


def setup(spec: str, script=tree_script, **budget):
    runtime = scripted_runtime(script, seed=3, verifiers={"scripted": ScriptedVerifier(marked_score)})
    solver = build_solver(spec, runtime)
    return solver, runtime.backend.inner


def find(trace: dict, kind: str) -> list[dict]:
    found = [trace] if trace.get("kind") == kind else []
    for c in trace.get("children", []):
        found += find(c, kind)
    return found


async def test_mcts_builds_the_expected_tree_and_votes():
    solver, backend = setup("mcts:verifier=scripted,k=3,sims=3,c=1")
    result = await solver.solve(Q)
    # sim 1 expands the root (one duplicate dropped); sim 2 the 0.9 child (UCT 0.9+0.83 > 0.2+0.83);
    # sim 3: that child's children are all terminal, so the 0.2 child.
    assert [r.prefix.rsplit("\n\n", 1)[-1] for r in backend.requests[::3]] == ["Step 1:", "Step 2:", "Step 2:"]
    (tree,) = find(result.trace, "tree")
    root = tree["root"]
    good, bad = root["children"]
    assert good["text"] == "Step 1: 2*3=6 apples." and len(good["children"]) == 2  # duplicate answer 5 dropped
    assert [c["answer"] for c in good["children"]] == ["5", "4"]
    assert good["N"] == 3 and good["Q"] == pytest.approx((0.9 + 0.9 + 0.4) / 3)
    assert [c["terminal"] for c in bad["children"]] == [True, False, True]
    assert root["N"] == 2 + 2 + 3 and root["Q"] == pytest.approx((0.9 + 0.2 + 0.9 + 0.4 + 0.2 * 3) / 7)
    assert result.answer == "5"  # votes: 5 -> 0.9; 4 -> 0.4 + 0.2; 3 -> 0.2
    assert {v["answer"]: v["votes"] for v in find(result.trace, "vote")[0]["votes"]} == pytest.approx(
        {"5": 0.9, "4": 0.6, "3": 0.2})
    # Every completion token sits on exactly one node, every call on the node it expanded.
    nodes = [root]
    for n in nodes:
        nodes += n.get("children", [])
    total = result.total
    assert sum(n["expand_tokens"] for n in nodes) == total.total_tokens
    assert sum(n["tokens"] for n in nodes) <= total.completion_tokens  # dropped duplicates cost tokens too
    json.dumps(result.trace)


async def test_vote_and_best_differ_when_a_lone_answer_scores_highest():
    drafts = [" 2*3-1=5 [s=0.95]. The answer is 5.", " 6-1=4 [s=0.6]. The answer is 4.",
              " 6 - 2 = 4 [s=0.6]. The answer is 4."]
    vote, _ = setup("mcts:verifier=scripted,k=3,sims=1,agg=last", lambda req, i: drafts[i % 3])
    best, _ = setup("mcts:verifier=scripted,k=3,sims=1,agg=last,select=best", lambda req, i: drafts[i % 3])
    assert (await vote.solve(Q)).answer == "4"  # 1.2 votes against 0.95
    assert (await best.solve(Q)).answer == "5"


async def test_budget_stop_returns_the_best_terminal_so_far_and_keeps_the_tree():
    solver, backend = setup("mcts:verifier=scripted,k=3,sims=10,max_calls=2")
    result = await solver.solve(Q)
    assert len(backend.requests) == 6  # two calls of n=3
    assert result.stopped == "max_calls=2 reached" and result.answer == "5"
    (tree,) = find(result.trace, "tree")
    assert len(tree["root"]["children"]) == 2 and tree["root"]["N"] == 4


async def test_max_depth_cuts_paths_into_answerless_terminals():
    solver, _ = setup("mcts:verifier=scripted,k=2,sims=5,max_depth=1", lambda req, i: " 2*3=6 apples." if i % 2
                      else " 3+3=6 apples.")
    result = await solver.solve(Q)
    (tree,) = find(result.trace, "tree")
    kids = tree["root"]["children"]
    assert [k["terminal"] for k in kids] == [True, True] and [k["answer"] for k in kids] == [None, None]
    assert tree["root"]["Q"] == 0.0 and result.answer is None
    assert find(result.trace, "stop")[0]["reason"] == "tree exhausted"


async def test_gold_reward_values_terminals_by_correctness():
    solver, _ = setup("mcts:verifier=scripted,k=3,sims=2,reward=gold")
    result = await solver.solve(Q)
    good = find(result.trace, "tree")[0]["root"]["children"][0]
    assert good["Q"] == pytest.approx((0.9 + 1.0 + 0.0) / 3)


def test_bad_mcts_params_are_spec_errors():
    from redline.errors import SpecError

    runtime = scripted_runtime(["x"])
    for spec in ("mcts:select=max", "mcts:k=0", "mcts:c=-1"):
        with pytest.raises(SpecError):
            build_solver(spec, runtime)


# --- the embedded model -------------------------------------------------------------------------

async def test_mcts_solves_end_to_end_on_the_embedded_model(local_runtime):
    solver = build_solver("mcts:sims=3,k=2,max_depth=3,step_tokens=40", local_runtime)
    result = await solver.solve(Problem("Sam has 3 apples and buys 2 more. How many apples does he have?", answer="5"))
    (tree,) = find(result.trace, "tree")
    nodes = [tree["root"]]
    for n in nodes:
        nodes += n.get("children", [])
    assert 1 <= result.usage["solve"].calls <= 3
    assert sum(n["expand_tokens"] for n in nodes) == result.total.total_tokens
    assert all(n["text"].startswith("Step ") for n in nodes[1:])
    assert tree["root"]["N"] >= len(nodes) - 1  # every child's first visit reached the root
    json.dumps(result.trace)


def test_visits_and_score_disagree_below_the_root_and_visits_decide():
    from redline.strategies.mcts import most_visited_terminal
    from redline.types import Candidate, Solution

    root = Node(visits=6, expanded=True)
    busy = child(root, 4, 2.0, expanded=True)   # Q 0.5, more visits
    child(root, 2, 1.8, expanded=True)           # Q 0.9, fewer visits
    cand = Candidate(Solution.from_text("The answer is 5."), score=0.4)
    often = child(busy, 2, 0.8, terminal=True, answer="5", score=0.4, candidate=cand)
    child(busy, 1, 0.9, terminal=True, answer="6", score=0.9, candidate=cand)  # higher score and Q, one visit
    assert most_visited_terminal(root) is often


async def test_select_visits_through_the_solver_follows_visits_not_scores():
    # The BRANCHES tree after 3 sims: the 0.2 child has 4 visits, the 0.9 child 3, so the walk goes to
    # the 0.2 child and its first terminal (answer 4, score 0.2), while vote and best both give 5 (0.9).
    answers = {}
    for select_by in ("visits", "best", "vote"):
        solver, _ = setup(f"mcts:verifier=scripted,k=3,sims=3,select={select_by}")
        answers[select_by] = (await solver.solve(Q)).answer
    assert answers == {"visits": "4", "best": "5", "vote": "5"}


@pytest.mark.parametrize("top, answer", [(1, "5"), (2, "5"), (3, "4")])
async def test_the_vote_counts_only_the_top_scored_terminals(top, answer):
    # Terminals: 5 scores 0.95, two 4s score 0.6 each. The top 2 are 5 and one 4 (0.95 > 0.6): 5 wins;
    # the top 3 let both 4s vote (1.2 > 0.95).
    drafts = [" 2*3-1=5 [s=0.95]. The answer is 5.", " 6-1=4 [s=0.6]. The answer is 4.",
              " 6 - 2 = 4 [s=0.6]. The answer is 4."]
    solver, _ = setup(f"mcts:verifier=scripted,k=3,sims=1,agg=last,top={top}", lambda req, i: drafts[i % 3])
    result = await solver.solve(Q)
    (vote,) = find(result.trace, "vote")
    assert result.answer == answer and vote["top"] == top
    assert sum(v["count"] for v in vote["votes"]) == top


async def test_a_draft_that_ends_the_sequence_makes_the_leaf_terminal():
    # Step 1 states no final answer; expanding it, the model ends the sequence (every draft empty):
    # the path is the whole solution, its answer the last number (5), valued by its score.
    def script(req, i):
        return " 2*3-1=5 apples are left." if req.prefix.endswith("Step 1:") else ""
    solver, backend = setup("mcts:verifier=scripted,k=2,sims=2", script)
    result = await solver.solve(Q)
    (tree,) = find(result.trace, "tree")
    (leaf,) = tree["root"]["children"]  # the two identical drafts are one child
    assert leaf["terminal"] and leaf["answer"] == "5" and "children" not in leaf
    assert leaf["N"] == 2 and leaf["Q"] == pytest.approx(0.9)  # first visit 0.9, terminal value 0.9
    assert result.answer == "5" and len(backend.requests) == 4  # two calls of k=2
