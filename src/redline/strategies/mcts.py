"""`mcts`: step-level Monte Carlo tree search guided by the verifier (rStar-Math, ReST-MCTS*).

A node is one step; the root is the bare question. Each simulation:

1. select: from the root, follow the child with the highest UCT value
   `Q + c * sqrt(ln N_parent / N_child)` among children that are neither terminal nor exhausted,
   down to a node not yet expanded;
2. expand: draw `k` next steps in one call (`n=k`, stopping at the step delimiter); drop
   duplicates (the same step as a sibling) and truncated steps (cut by the token limit);
3. evaluate: the verifier scores each child's whole path (through `score_paths`, so the shared
   sanity rules apply); that score is the child's first visit. A terminal child (an answer
   line, or `max_depth` reached) is worth its score when it has a parseable answer, else 0
   (a path cut at `max_depth` has none: the last number of a step is not an answer);
   with `reward=gold` (data generation only) it is worth 1 when its answer is right, else 0;
4. back up: each first visit counts once at every ancestor, so `Q` is the mean of the values
   seen below a node and `N` their number.

An expansion whose drafts are all end-of-sequence makes the node terminal (its path is the whole
solution, valued as above); one that yields nothing new (all duplicates or truncated) marks it
exhausted. The answer comes from the terminals: `vote` sums the scores of the `top` best-scored
terminals per equivalent answer, `best` takes the best-scored terminal, `visits` follows the
most-visited child from the root. A budget stop returns the best terminal proposed so far.

Defaults, and why:
- `c=1.0`: rStar-Math uses `c_puct=2` with Q in [-1, 1] (`config/*.yaml`, `MCTSNode.puct`);
  Q in [0, 1] halves the range, so c=1 keeps the same exploration-to-value ratio. It is also
  llm-reasoners' `w_exp=1.`. The bonus uses rStar's and llm-reasoners' `sqrt(ln N_p / N)` form,
  not AlphaZero's prior-weighted PUCT (OpenR): we have no policy prior per step.
- first visit = verifier score: rStar-Math's `update_leaf_value` and OpenR's `init_critic_value`
  seed a new node with the reward model's value rather than a rollout, which costs no tokens.
- `k=4`: llm-reasoners' RAP GSM8K example (`n_action=4`); rStar samples 12-32 per node, but
  for a 7B model on GPUs, not a 135M model on two CPU cores.
- `sims=8`: llm-reasoners' default is 10 iterations and rStar's evaluation config 12; 8
  expansions of 4 steps is about the step budget of `beam`'s defaults (4 steps per depth over
  ~6 depths), so the two compare at similar cost out of the box. Raise it for harder problems.
- `max_depth=8`: beam's limit (rStar uses 16 for MATH; llm-reasoners 5 for GSM8K); ASDiv and
  GSM8K take 1-8 steps.
- `temperature=0.7`: rStar-Math's first-round sampling config (`sample_mcts.yaml`) and beam's.
- `agg=min`: a path's score is its weakest step's, as in beam, so the two differ only in search.
- `select=vote, top=4`: rStar-Math's `eval_maj.py` (`--top_n 4`, score-weighted majority).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Mapping

from pydantic import Field

from redline.errors import SpecError
from redline.registry import STRATEGIES, Params
from redline.runtime import Runtime
from redline.strategies.base import SolveContext
from redline.strategies.generation import StepDraft, is_final, next_steps, refine_step
from redline.strategies.scoring import score_paths
from redline.strategies.voting import score_vote, tally, votes_dict, winner, with_group_votes
from redline.text import answers_equal, join_steps
from redline.text.steps import strip_step_labels
from redline.types import Candidate, Problem, Result, Solution
from redline.verifiers.base import Aggregation


class MCTSParams(Params):
    sims: int = Field(8, ge=1, le=1000, description="simulations: one expansion (one call of k steps) each")
    k: int = Field(4, ge=1, le=64, description="children drawn per expansion")
    max_depth: int = Field(8, ge=1, le=40, description="most steps in a solution; deeper nodes are terminal")
    c: float = Field(1.0, ge=0.0, le=10.0, description="UCT exploration weight (Q in [0, 1])")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="step sampling temperature")
    verifier: str = Field("arith", min_length=1, description="verifier spec that scores every path")
    agg: Aggregation = Field("min", description="path score from step scores: last, min, prod, mean")
    select: Literal["vote", "best", "visits"] = Field("vote", description="final answer: score-weighted vote over "
                                                      "the top terminals, best-scored terminal, or most visits")
    top: int = Field(4, ge=1, le=1024, description="terminals that take part in select=vote")
    reward: Literal["verifier", "gold"] = Field("verifier", description="terminal value: verifier score, or "
                                                "correctness against the gold answer (data generation only)")
    step_tokens: int = Field(96, ge=8, le=1024, description="token limit for one step")


@dataclass(eq=False)
class Node:
    """One step of the tree. `visits` and `value_sum` include the node's own first visit."""

    text: str = ""
    parent: "Node | None" = None
    score: float = 0.0
    tokens: int = 0  # completion tokens of this step
    expand_tokens: int = 0  # every token of the call that expanded this node, duplicates included
    terminal: bool = False
    answer: str | None = None
    children: list["Node"] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    expanded: bool = False
    exhausted: bool = False
    candidate: Candidate | None = field(default=None, repr=False)

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def depth(self) -> int:
        return 0 if self.parent is None else self.parent.depth + 1

    @property
    def steps(self) -> list[str]:
        """The steps from the root to this node."""
        return [] if self.parent is None else self.parent.steps + [self.text]

    def walk(self) -> Iterator["Node"]:
        yield self
        for child in self.children:
            yield from child.walk()


def uct(child: Node, parent_visits: int, c: float) -> float:
    """Q plus the exploration bonus; every child has at least its first visit."""
    return child.q + c * math.sqrt(math.log(max(parent_visits, 1)) / max(child.visits, 1))


def select(root: Node, c: float) -> Node | None:
    """The unexpanded node UCT leads to, or None once nothing is left to expand. A node whose
    children are all terminal or exhausted becomes exhausted itself, and selection restarts."""
    while not root.exhausted:
        node = root
        while node.expanded:
            open_children = [ch for ch in node.children if not ch.terminal and not ch.exhausted]
            if not open_children:
                node.exhausted = True
                break
            parent = node
            node = max(open_children, key=lambda ch: uct(ch, parent.visits, c))
        else:
            return node
    return None


def backup(node: Node, value: float) -> None:
    """Count one visit of `value` at `node` and at every ancestor (Q stays the mean)."""
    walker: Node | None = node
    while walker is not None:
        walker.visits += 1
        walker.value_sum += value
        walker = walker.parent


def terminal_value(node: Node, gold: str | None = None) -> float:
    """A finished path's value: its score when it has an answer (correctness when `gold` is given)."""
    if node.answer is None:
        return 0.0
    if gold is not None:
        return 1.0 if answers_equal(node.answer, gold) else 0.0
    return node.score


def novel(drafts: list[StepDraft], siblings: list[Node]) -> list[StepDraft]:
    """Drafts worth a child: not truncated, not ended empty, and not a duplicate of a sibling or
    of an earlier draft (compared without the 'Step k:' label and whitespace)."""
    seen = {" ".join(strip_step_labels(s.text).split()) for s in siblings}
    kept = []
    for draft in drafts:
        body = " ".join(strip_step_labels(draft.text).split())
        if draft.truncated or not body or body in seen:
            continue
        seen.add(body)
        kept.append(draft)
    return kept


def tree_dict(node: Node) -> dict[str, Any]:
    """JSON form of the tree (what `redline.train.tree_data` reads back)."""
    out: dict[str, Any] = {"text": node.text, "N": node.visits, "Q": round(node.q, 6), "score": round(node.score, 6),
                           "tokens": node.tokens, "expand_tokens": node.expand_tokens, "terminal": node.terminal,
                           "answer": node.answer}
    if node.children:
        out["children"] = [tree_dict(ch) for ch in node.children]
    return out


def tree_from_dict(data: Mapping[str, Any], parent: Node | None = None) -> Node:
    """Inverse of `tree_dict` (statistics and text; candidates are not stored)."""
    visits = int(data.get("N", 0))
    node = Node(str(data.get("text", "")), parent, score=float(data.get("score", 0.0)),
                tokens=int(data.get("tokens", 0)), expand_tokens=int(data.get("expand_tokens", 0)),
                terminal=bool(data.get("terminal")), answer=data.get("answer"), visits=visits,
                value_sum=float(data.get("Q", 0.0)) * visits, expanded="children" in data)
    node.children = [tree_from_dict(ch, node) for ch in data.get("children", ())]
    return node


def answered_terminals(root: Node) -> list[Node]:
    return [n for n in root.walk() if n.terminal and n.answer is not None and n.candidate is not None]


def most_visited_terminal(root: Node) -> Node | None:
    """Follow the most-visited child (then the higher Q) from the root; the best terminal below
    where the walk ends."""
    node = root
    while node.children and not node.terminal:
        node = max(node.children, key=lambda ch: (ch.visits, ch.q))
    below = answered_terminals(node)
    return max(below, key=lambda n: n.score) if below else None


class MCTS:
    def __init__(self, params: MCTSParams, verifier: Any) -> None:
        self.params = params
        self.verifier = verifier

    async def solve(self, problem: Problem, ctx: SolveContext) -> Result:
        p = self.params
        if p.reward == "gold" and problem.answer is None:
            raise SpecError("mcts reward=gold needs problems with a gold answer")
        root = Node(expanded=False)
        stop = f"sims={p.sims} done"
        try:
            for sim in range(p.sims):
                leaf = select(root, p.c)
                if leaf is None:
                    stop = "tree exhausted"
                    break
                await self.expand(ctx, problem, leaf, seed=ctx.seed(1000 + sim))
        finally:  # a budget stop unwinds through here: the tree still reaches the trace
            ctx.trace.child("tree", root=tree_dict(root))
        return self.finish(ctx, problem, root, stop)

    async def expand(self, ctx: SolveContext, problem: Problem, leaf: Node, seed: int) -> None:
        """Draw k next steps after `leaf`, score the new children and back their first visits up."""
        p = self.params
        before = ctx.ledger.total().total_tokens
        drafts = await next_steps(ctx, problem, leaf.steps, n=p.k, temperature=p.temperature, seed=seed,
                                  max_tokens=p.step_tokens)
        leaf.expanded = True
        kept = novel(drafts, leaf.children)
        texts = [await refine_step(ctx, problem, leaf.steps, d.text) for d in kept]
        finals = [d.done or is_final(t) for d, t in zip(kept, texts)]
        scored = await score_paths(ctx, self.verifier, problem, [Solution.from_text(join_steps(leaf.steps + [t]))
                                                                 for t in texts], finals, p.agg,
                                   origin=f"mcts depth {leaf.depth + 1}")
        gold = problem.answer if p.reward == "gold" else None
        for draft, text, final, cand in zip(kept, texts, finals, scored):
            child = Node(text, leaf, score=cand.score or 0.0, tokens=draft.tokens,
                         answer=cand.solution.answer if final else None, candidate=cand)
            child.terminal = final or child.depth >= p.max_depth
            leaf.children.append(child)
            backup(child, terminal_value(child, gold) if child.terminal else child.score)
        if not kept and drafts and all(d.done and not d.truncated for d in drafts) and leaf.parent is not None:
            # The model ended the sequence: this path is the whole solution, now held to the final-answer rule.
            (cand,) = await score_paths(ctx, self.verifier, problem, [Solution.from_text(join_steps(leaf.steps))],
                                        [True], p.agg, origin=f"mcts depth {leaf.depth}")
            leaf.terminal, leaf.candidate, leaf.score = True, cand, cand.score or 0.0
            leaf.answer = cand.solution.answer
            backup(leaf, terminal_value(leaf, gold))
        elif not kept:
            leaf.exhausted = True
        leaf.expand_tokens += ctx.ledger.total().total_tokens - before

    def finish(self, ctx: SolveContext, problem: Problem, root: Node, stop: str) -> Result:
        p = self.params
        terminals = answered_terminals(root)
        pool = [n.candidate for n in terminals if n.candidate is not None]
        chosen: Candidate | None = None
        if p.select == "vote":
            top = sorted(pool, key=lambda c: c.score or 0.0, reverse=True)[: p.top]
            groups = tally(top, weight=score_vote)
            ctx.trace.child("vote", top=p.top, votes=votes_dict(groups))
            pool, chosen = with_group_votes(pool, groups), winner(groups)
        elif p.select == "visits":
            node = most_visited_terminal(root)
            chosen = node.candidate if node else None
        chosen = chosen or max(pool, key=lambda c: c.score or 0.0, default=None)
        ctx.trace.child("stop", reason=stop, nodes=sum(1 for _ in root.walk()) - 1, terminals=len(terminals))
        return ctx.finish(problem, chosen.solution if chosen else None, pool)


@STRATEGIES.register("mcts", MCTSParams, "step-level MCTS: UCT over verifier-scored steps, score-weighted vote")
def build_mcts(params: MCTSParams, runtime: Runtime) -> MCTS:
    return MCTS(params, runtime.verifier(params.verifier))
