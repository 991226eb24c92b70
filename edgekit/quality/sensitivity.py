"""Accuracy-budget search: find the few sensitive nodes to keep in float so a quantized model meets its budget.

Generic over the toolchain (ONNX Runtime, OpenVINO/NNCF, ...): the caller gives
  candidates             node names that may be kept in float (in graph order),
  build(excluded) -> X   produce a quantized artifact with those nodes kept in float,
  score(X) -> float      fidelity of X on held-out data (task metric or cosine; 1.0 = identical to FP32),
  describe(X) -> dict    optional extra facts per variant (size, latency) recorded in the report.
`drop = 1 - score`; the budget holds when `drop <= max_drop`.

Search (bounded by `max_evaluations` build+score calls, every one recorded as a Variant):
  1. baseline: nothing excluded; stop if it meets the budget;
  2. sensitivity: exclude one unit at a time and measure the gain in score over the baseline. A unit is a node;
     when there are more candidates than half the evaluation budget it is a group: the caller's `groups` (e.g.
     nodes playing the same role in repeated blocks, such as every FFN output projection of a transformer) when
     they fit the budget, else contiguous runs of nodes in graph order;
  3. greedy: exclude units cumulatively, most sensitive first, until the budget holds, the evaluations run
     out, `patience` successive additions gain less than `min_gain` ("nothing more is gained"), or the next
     addition would keep every candidate in float (that is the float model, not a quantized variant);
  4. refine (only when groups were used): put nodes of the excluded groups back one by one (last in graph order
     first) while the budget still holds, so fewer nodes stay in float.
The chosen variant is the one meeting the budget with the fewest excluded nodes (best score on ties); when
none meets it, `chosen` is None and the caller must fail or report it — never pick it silently.

`build_up_quantized` searches from the other end (every candidate ranked by the damage it does quantized alone, then
the longest least-damage-first set that meets the budget), for task metrics too coarse to rank single nodes by (lines
identical moves by whole lines); `distribution_damage` is the fine-grained proxy it ranks by for class-distribution
outputs (flipped top-1 positions, KL).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence

from edgekit.core.errors import EdgekitError


@dataclass
class Variant:
    """One build+score: what was kept in float, how well it scored, and whether it met the budget."""

    name: str
    excluded_nodes: List[str]
    score: float
    drop: float
    meets_budget: bool
    phase: str
    seconds: float
    details: Dict[str, Any] = field(default_factory=dict)
    artifact: Any = None  # the built artifact (not serialised)

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("artifact", None)
        return d


@dataclass
class SearchResult:
    """Every variant tried, the chosen one (or None), and why the search stopped."""

    variants: List[Variant]
    chosen: Optional[Variant]
    max_drop: float
    stop_reason: str
    sensitivity: Dict[str, float] = field(default_factory=dict)  # unit label -> score gain when kept in float

    @property
    def best(self) -> Variant:
        return max(self.variants, key=lambda v: (v.score, -len(v.excluded_nodes)))

    def as_dict(self) -> Dict[str, Any]:
        return {
            "max_drop": self.max_drop,
            "stop_reason": self.stop_reason,
            "chosen": self.chosen.name if self.chosen else None,
            "variants": [v.as_dict() for v in self.variants],
            "sensitivity": self.sensitivity,
        }


class _Budget(EdgekitError):
    """Internal: the evaluation budget is spent."""


def _groups(candidates: Sequence[str], n_units: int) -> List[List[str]]:
    """Split candidates, in graph order, into at most n_units contiguous groups of near-equal size."""
    n_units = max(1, min(n_units, len(candidates)))
    size, rem = divmod(len(candidates), n_units)
    out, start = [], 0
    for i in range(n_units):
        end = start + size + (1 if i < rem else 0)
        out.append(list(candidates[start:end]))
        start = end
    return [g for g in out if g]


def _role_units(groups: Sequence[Sequence[str]], order: Dict[str, int]) -> Optional[List[List[str]]]:
    """The caller's groups restricted to candidates, in graph order; None unless they partition the candidates."""
    seen: set = set()
    units = []
    for g in groups:
        u = sorted({n for n in g if n in order and n not in seen}, key=order.__getitem__)
        seen.update(u)
        if u:
            units.append(u)
    if len(seen) != len(order):
        return None
    return sorted(units, key=lambda u: order[u[0]])


def keep_sensitive_nodes_in_float(
    candidates: Sequence[str],
    build: Callable[[List[str]], Any],
    score: Callable[[Any], float],
    *,
    max_drop: float,
    max_evaluations: int = 24,
    describe: Optional[Callable[[Any], Dict[str, Any]]] = None,
    min_gain: float = 1e-4,
    patience: int = 3,
    refine: bool = True,
    progress: Optional[Callable[[str], None]] = None,
    keep_artifacts: bool = False,
    groups: Optional[Sequence[Sequence[str]]] = None,
) -> SearchResult:
    """Run the bounded sensitivity search described in the module docstring."""
    if max_drop < 0:
        raise EdgekitError(f"max_drop must be >= 0, got {max_drop}", hint="e.g. --max-drop 0.5% (= 0.005)")
    if max_evaluations < 1:
        raise EdgekitError(f"max_evaluations must be >= 1, got {max_evaluations}")
    candidates = list(dict.fromkeys(candidates))  # dedupe, keep graph order
    order = {name: i for i, name in enumerate(candidates)}
    threshold = 1.0 - max_drop
    variants: List[Variant] = []
    cache: Dict[FrozenSet[str], Variant] = {}

    def evaluate(excluded: List[str], phase: str, name: str) -> Variant:
        key = frozenset(excluded)
        if key in cache:
            return cache[key]
        if len(variants) >= max_evaluations:
            raise _Budget("evaluation budget spent")
        t0 = time.perf_counter()
        ordered = sorted(key, key=lambda n: order.get(n, len(order)))
        art = build(ordered)
        s = float(score(art))
        details = dict(describe(art)) if describe else {}
        v = Variant(
            name=name,
            excluded_nodes=ordered,
            score=s,
            drop=1.0 - s,
            meets_budget=(1.0 - s) <= max_drop + 1e-12,
            phase=phase,
            seconds=round(time.perf_counter() - t0, 3),
            details=details,
            artifact=art if keep_artifacts else None,
        )
        variants.append(v)
        cache[key] = v
        if progress:
            progress(f"variant {name}: score {s:.5f} (drop {v.drop:.5f}, budget {max_drop:.5f}) with {len(ordered)} node(s) in float")
        return v

    def result(reason: str, sens: Dict[str, float]) -> SearchResult:
        meeting = [v for v in variants if v.meets_budget]
        chosen = min(meeting, key=lambda v: (len(v.excluded_nodes), -v.score)) if meeting else None
        return SearchResult(variants=variants, chosen=chosen, max_drop=max_drop, stop_reason=reason, sensitivity=sens)

    base = evaluate([], "baseline", "all-quantized")
    if base.meets_budget:
        return result("baseline meets the budget", {})
    if not candidates:
        return result("no candidate nodes to keep in float", {})

    # 2. sensitivity ranking
    # at least two units, so no probe keeps *every* candidate in float (that would just be the float model)
    rank_budget = max(2, (max_evaluations - 1) // 2)
    grouped = len(candidates) > rank_budget
    role_units = _role_units(groups, order) if grouped and groups else None
    if role_units is not None and 2 <= len(role_units) <= rank_budget:
        units = role_units
    else:
        units = _groups(candidates, rank_budget) if grouped else [[c] for c in candidates]
    labels = [u[0] if len(u) == 1 else f"{u[0]}..{u[-1]} ({len(u)} nodes)" for u in units]
    gains: Dict[int, float] = {}
    sens: Dict[str, float] = {}
    try:
        for i, unit in enumerate(units):
            v = evaluate(unit, "sensitivity", f"keep {labels[i]}")
            gains[i] = v.score - base.score
            sens[labels[i]] = round(gains[i], 6)
    except _Budget:
        return result("evaluation budget spent during the sensitivity pass", sens)

    # 3. greedy accumulation, most sensitive unit first
    ranked = sorted(gains, key=lambda i: (-gains[i], i))
    excluded: List[str] = []
    best_score = base.score
    stale = 0
    reason = "all units kept in float without meeting the budget"
    met: Optional[Variant] = None
    try:
        for step, i in enumerate(ranked):
            if len(excluded) + len(units[i]) >= len(candidates):
                reason = "budget not met before every candidate would stay in float (nothing left quantized)"
                break
            excluded = excluded + units[i]
            v = evaluate(excluded, "greedy", f"greedy-{step + 1} (+{labels[i]})")
            if v.meets_budget:
                met = v
                reason = f"budget met after keeping {len(excluded)} node(s) in float"
                break
            if v.score < best_score + min_gain:
                stale += 1
                if stale >= patience:
                    reason = f"nothing more gained: {patience} successive additions improved the score by < {min_gain}"
                    break
            else:
                stale = 0
            best_score = max(best_score, v.score)
    except _Budget:
        reason = "evaluation budget spent during the greedy pass"

    # 4. refine: return nodes of excluded groups to int8 while the budget still holds
    if met is not None and grouped and refine:
        keep = list(met.excluded_nodes)
        try:
            for node in sorted(met.excluded_nodes, key=lambda n: -order.get(n, 0)):
                trial = [n for n in keep if n != node]
                v = evaluate(trial, "refine", f"refine (-{node})")
                if v.meets_budget:
                    keep = trial
        except _Budget:
            reason += "; refinement stopped: evaluation budget spent"
        else:
            reason += f"; refined to {len(keep)} node(s)"
    return result(reason, sens)


def distribution_damage(ref_outputs: Sequence[Sequence[Any]], new_outputs: Sequence[Sequence[Any]]) -> Dict[str, float]:
    """A continuous proxy of how far a quantized model's class distributions moved from FP32's, for models whose outputs
    are per-position probability distributions (e.g. a CTC recogniser's Softmax: [batch, time, classes]).

    Per sample and output, the positions are the rows over the last axis. Returns `positions`, `flips` (positions whose
    argmax differs from the reference's), `flip_rate` and `kl` (mean KL(ref || new) per position, with probabilities
    clipped at 1e-7). Lines identical (the task metric) moves by whole lines; `flips` and `kl` move by single positions,
    so they rank small differences between variants that lines cannot."""
    import numpy as np

    positions = flips = 0
    kl_sum = 0.0
    for ref, new in zip(ref_outputs, new_outputs):
        for r, n in zip(ref, new):
            r = np.asarray(r, dtype=np.float64)
            n = np.asarray(n, dtype=np.float64)
            if r.shape != n.shape or r.ndim < 1 or r.shape[-1] < 2:
                raise EdgekitError(f"distribution_damage: output shapes {r.shape} and {n.shape} are not matching class distributions",
                                   hint="use it on Softmax outputs of the same model")
            r2 = r.reshape(-1, r.shape[-1])
            n2 = n.reshape(-1, n.shape[-1])
            positions += r2.shape[0]
            flips += int((r2.argmax(-1) != n2.argmax(-1)).sum())
            rp = np.clip(r2, 1e-7, None)
            npr = np.clip(n2, 1e-7, None)
            kl_sum += float(np.sum(rp * (np.log(rp) - np.log(npr))))
    if not positions:
        raise EdgekitError("distribution_damage: no outputs to compare", hint="give at least one sample")
    return {"positions": positions, "flips": flips, "flip_rate": flips / positions, "kl": kl_sum / positions}


def build_up_quantized(
    candidates: Sequence[str],
    build: Callable[[List[str]], Any],
    measure: Callable[[Any], Any],
    *,
    max_drop: float,
    max_evaluations: int = 64,
    max_seconds: Optional[float] = None,
    progress: Optional[Callable[[str], None]] = None,
    weights: Optional[Dict[str, float]] = None,
) -> SearchResult:
    """Forward (build-up) mixed-precision search: the most ops quantized such that the score still meets the budget.

    `build(excluded)` makes the variant with `excluded` kept in float (the same contract as
    keep_sensitive_nodes_in_float); `measure(X)` returns `(score, damage)`: the task score (1.0 = identical to FP32,
    the acceptance test) and a continuous damage proxy (lower = closer to FP32, e.g. distribution_damage's kl) used to
    rank the candidates.
      1. baseline: every candidate quantized; stop if it meets the budget;
      2. damage: each candidate quantized alone (all others in float), ranked by its damage (ties: graph order);
         a candidate whose score alone misses the budget is never quantized;
      3. build-up: binary search for the longest prefix of the ranking (least damage first) that meets the budget;
      4. extend: each later candidate in ranking order is added if the set still meets the budget with it.
    Bounded by `max_evaluations` build+score calls and `max_seconds` (no evaluation starts after it; a candidate not ranked when they run out stays in float). The
    chosen variant is the one meeting the budget with the fewest nodes in float; `sensitivity` maps each ranked
    candidate to its damage alone. Greedy removal from the all-quantized end (keep_sensitive_nodes_in_float) stops at
    the first set that meets the budget on the validation samples; building up ranks every op on its own first.

    With `weights` (what quantizing each candidate gains, e.g. its multiply-accumulates: the speed a user wants), the
    ranking is damage per unit of weight (the greedy order of the knapsack "most weight within the budget") and the
    chosen variant is the one meeting the budget with the most weight quantized; a candidate without a weight counts 0."""
    if max_drop < 0:
        raise EdgekitError(f"max_drop must be >= 0, got {max_drop}", hint="e.g. --max-drop 0.5% (= 0.005)")
    if max_evaluations < 1:
        raise EdgekitError(f"max_evaluations must be >= 1, got {max_evaluations}")
    candidates = list(dict.fromkeys(candidates))
    order = {name: i for i, name in enumerate(candidates)}
    variants: List[Variant] = []
    cache: Dict[FrozenSet[str], Variant] = {}
    t_start = time.perf_counter()

    def evaluate(quantized: Sequence[str], phase: str, name: str) -> Variant:
        q = set(quantized)
        excluded = [c for c in candidates if c not in q]
        key = frozenset(excluded)
        if key in cache:
            return cache[key]
        if len(variants) >= max_evaluations or (max_seconds is not None and variants and time.perf_counter() - t_start > max_seconds):
            raise _Budget("evaluation budget spent")
        t0 = time.perf_counter()
        art = build(excluded)
        s, dmg = measure(art)
        v = Variant(name=name, excluded_nodes=excluded, score=float(s), drop=1.0 - float(s), meets_budget=(1.0 - float(s)) <= max_drop + 1e-12,
                    phase=phase, seconds=round(time.perf_counter() - t0, 3), details={"damage": float(dmg), "quantized": len(q)})
        variants.append(v)
        cache[key] = v
        if progress:
            progress(f"variant {name}: score {v.score:.5f} (budget {1 - max_drop:.5f}), damage {dmg:.3g}, {len(q)} of {len(candidates)} quantized")
        return v

    gain = {c: max(0.0, float(weights.get(c, 0.0))) for c in candidates} if weights is not None else None

    def gained(v: Variant) -> float:
        out = set(v.excluded_nodes)
        return sum(gain[c] for c in candidates if c not in out) if gain is not None else 0.0

    def result(reason: str, sens: Dict[str, float]) -> SearchResult:
        meeting = [v for v in variants if v.meets_budget and len(v.excluded_nodes) < len(candidates)]
        chosen = min(meeting, key=lambda v: (-gained(v), len(v.excluded_nodes), -v.score)) if meeting else None
        return SearchResult(variants=variants, chosen=chosen, max_drop=max_drop, stop_reason=reason, sensitivity=sens)

    if not candidates:
        raise EdgekitError("build_up_quantized: no candidate nodes", hint="give the weighted nodes that may be quantized")
    base = evaluate(candidates, "baseline", "all-quantized")
    if base.meets_budget:
        return result("baseline meets the budget", {})
    damage: Dict[str, float] = {}
    alone_ok: Dict[str, bool] = {}
    reason = ""
    try:
        for c in candidates:
            v = evaluate([c], "damage", f"only {c}")
            damage[c] = v.details["damage"]
            alone_ok[c] = v.meets_budget
    except _Budget:
        reason = f"search budget (evaluations or seconds) spent while ranking ({len(damage)} of {len(candidates)} ranked; the rest stay in float); "
    if gain is not None:
        total = sum(gain.values()) or 1.0
        ranked = sorted((c for c in damage if alone_ok[c]), key=lambda c: (damage[c] / max(gain[c] / total, 1e-9), order[c]))
    else:
        ranked = sorted((c for c in damage if alone_ok[c]), key=lambda c: (damage[c], order[c]))
    sens = {c: round(damage[c], 8) for c in sorted(damage, key=lambda c: (damage[c], order[c]))}
    if not ranked:
        return result(reason + "no candidate meets the budget when quantized alone", sens)
    # 3. longest passing prefix, by bisection (prefix 1 passed alone; the full set is the baseline's, which missed)
    lo, hi = 1, (len(ranked) if len(ranked) == len(candidates) else len(ranked) + 1)  # prefix lo passes; prefix hi fails or is past the end
    try:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            v = evaluate(ranked[:mid], "build-up", f"build-up {mid} (+{ranked[mid - 1]})")
            if v.meets_budget:
                lo = mid
            else:
                hi = mid
        chosen_set = list(ranked[:lo])
        # 4. extend with later candidates that still fit
        for c in ranked[lo:]:
            v = evaluate(chosen_set + [c], "extend", f"extend (+{c})")
            if v.meets_budget:
                chosen_set.append(c)
        reason += f"build-up: {len(chosen_set)} of {len(candidates)} quantized meet the budget"
    except _Budget:
        reason += "search budget (evaluations or seconds) spent during the build-up"
    return result(reason, sens)
