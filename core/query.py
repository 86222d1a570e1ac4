"""Query methods as compositions: score × aggregation × selection rule, registered per domain.

A query method turns one cycle's evidence (lazy and cached: probabilities, MC samples, features,
window-mean voxel scores, ...) into a batch of candidate ids *and says why*:
``QueryResult(ids, scores, detail)``.  It is composed of

* a **score** (an uncertainty measure, eqs. 3.1–3.2): evidence → one value per candidate after the
  domain's *aggregation* (identity in classification; the mean over every query-patch window in
  segmentation, thesis §7.4);
* a **selection rule**: ``topk``; ``power(β)`` / ``softrank(β)`` of *any* score (eqs. 3.3–3.5);
  ClaSP's class stratification (§D); or a set-based rule (k-center greedy, k-means++ seeding,
  random placement).

Each domain registers its own short names — the registry is keyed by ``(domain, name)``, so
``bald`` in classification and ``bald`` in segmentation are different methods.  A scored family is
one call, and power/softrank come with it::

    query.register_scored("classification", query.Score("entropy", fn, needs=("probs",)), query.ranked)
    # -> "entropy" (top-k), "power_entropy", "softrank_entropy"

A one-off method is one decorated function returning a :class:`QueryResult`::

    @query.register("classification", "random", needs=(), rule=query.UNIFORM)
    def _random(ev, n, rng): ...

A method declares the evidence kinds it ``needs`` (the domain computes exactly those, once per
cycle) and the ``model`` it needs (read by the domain: ``{"dropout": 0.5}`` for BALD's Bayesian head,
``{"min_ensemble": 2}`` for a segmentation BALD).  β comes from the evidence context
(``ev.context["beta"]``, default 1.0), which the run fills from its config.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from . import selection
from .errors import UserError


class Evidence(Mapping):
    """Lazy, cached evidence for one query: ``ev["probs"]`` computes the kind on first access.

    ``providers`` maps a kind to a zero-argument callable; ``values`` are kinds already computed;
    ``context`` holds plain values (cycle, β, ...) exposed as ``ev.context``; ``candidates`` are the
    ids of the unlabelled candidates, in the order the evidence arrays index them (an array, or any
    object with ``len``, positional indexing and optionally ``contains(ids) -> bool array``)."""

    def __init__(self, providers: Mapping[str, Callable[[], Any]] | None = None,
                 values: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None,
                 candidates=None):
        self._providers = dict(providers or {})
        self._cache: dict[str, Any] = dict(values or {})
        self.context: dict[str, Any] = dict(context or {})
        self.candidates = candidates

    def __getitem__(self, kind: str):
        if kind not in self._cache:
            if kind not in self._providers:
                raise KeyError(f"evidence {kind!r} not provided (have: {sorted(self)})")
            self._cache[kind] = self._providers.pop(kind)()
        return self._cache[kind]

    def __iter__(self):
        return iter(set(self._cache) | set(self._providers))

    def __len__(self):
        return len(set(self._cache) | set(self._providers))

    def computed(self) -> set[str]:
        return set(self._cache)

    def positions_to_ids(self, positions) -> np.ndarray:
        return np.asarray(self.candidates[np.asarray(positions, dtype=np.int64)], dtype=np.int64)

    def beta(self) -> float:
        return float(self.context.get("beta", 1.0))


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------

def _round(v: float) -> float | None:
    v = float(v)
    return float(f"{v:.6g}") if math.isfinite(v) else None


def _stats(x: np.ndarray) -> dict:
    return {"min": _round(x.min()), "max": _round(x.max()), "mean": _round(x.mean()), "median": _round(np.median(x))}


@dataclass
class QueryResult:
    """What a query method returns: the picked candidate ids (pick order), the score of each pick
    (0 where the method has no score, e.g. random), method-specific ``detail`` (JSON-able: β, ClaSP's
    per-class quotas, ...) and optionally the score of every candidate (``pool_scores``, for the
    score distribution; only a bounded summary is stored)."""
    ids: np.ndarray
    scores: np.ndarray
    detail: dict = field(default_factory=dict)
    pool_scores: np.ndarray | None = None

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.int64).ravel()
        self.scores = np.asarray(self.scores, dtype=np.float64).ravel()

    def summary(self, top: int = 50, bins: int = 20) -> dict:
        """Bounded JSON summary for the cycle record: the ``top`` best-scored picks (with their per-pick
        detail, e.g. ClaSP's stratum), stats of all picks, and stats + a ``bins``-bin histogram +
        quantiles of the pool's scores."""
        n = len(self.ids)
        per_pick = {k: v for k, v in self.detail.items() if isinstance(v, (list, tuple, np.ndarray)) and len(v) == n}
        out: dict = {"n": int(n), "detail": {k: v for k, v in self.detail.items() if k not in per_pick}}
        if n:
            order = np.argsort(-self.scores, kind="stable")[:top]
            out["picked"] = {"ids": self.ids[order].tolist(), "scores": [_round(v) for v in self.scores[order]],
                             **{k: [v[i] for i in order] for k, v in per_pick.items()}, **_stats(self.scores)}
        if self.pool_scores is not None:
            p = np.asarray(self.pool_scores, dtype=np.float64).ravel()
            p = p[np.isfinite(p)]
            if len(p):
                counts, edges = np.histogram(p, bins=bins)
                q = np.quantile(p, [0.05, 0.25, 0.5, 0.75, 0.95])
                out["pool"] = {"n": int(len(p)), **_stats(p), "std": _round(p.std()),
                               "quantiles": {k: _round(v) for k, v in zip(("q05", "q25", "q50", "q75", "q95"), q)},
                               "hist": {"edges": [_round(e) for e in edges], "counts": counts.tolist()}}
        return out


# ---------------------------------------------------------------------------------------------
# scores and selection rules
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Score:
    """A measure of the candidates: ``fn(evidence)`` → scores in the domain's candidate layout (a
    ``[N]`` array in classification; per-image window-score grids in segmentation)."""
    name: str
    fn: Callable[[Evidence], Any]
    needs: tuple = ()
    model: Mapping = field(default_factory=dict)
    label: str = ""          # display name of the plain (top-k) method, e.g. "Predictive Entropy"
    short: str = ""          # inside composed labels, e.g. "PE" → "PowerPE"
    description: str = ""


@dataclass(frozen=True)
class Rule:
    """A selection rule.  ``prefix``/``label_prefix`` name the methods it composes from a score."""
    name: str
    prefix: str = ""
    label_prefix: str = ""
    uses_beta: bool = False
    description: str = ""


TOPK = Rule("topk", description="top-k")
POWER = Rule("power", "power_", "Power", True, "log score + Gumbel(0, 1/β) noise, top-k (eq. 3.3)")
SOFTRANK = Rule("softrank", "softrank_", "Softrank", True, "−log rank + Gumbel(0, 1/β) noise, top-k (eq. 3.5)")
STRATIFIED = Rule("stratified", description="per-stratum quotas (ClaSP)")
UNIFORM = Rule("uniform", description="uniformly random")
KCENTER = Rule("kcenter", description="k-center greedy")
KMEANSPP = Rule("kmeanspp", description="k-means++ seeding")
RANK_RULES = (TOPK, POWER, SOFTRANK)


def rank(rule: Rule, scores, n: int, rng: np.random.Generator, beta: float = 1.0) -> np.ndarray:
    """Positions of ``n`` candidates drawn from 1-D ``scores`` by a ranking rule (topk/power/softrank)."""
    if rule is TOPK:
        return selection.topk(scores, n)
    if rule is POWER:
        return selection.power(scores, n, rng, beta=beta)
    if rule is SOFTRANK:
        return selection.softrank(scores, n, rng, beta=beta)
    raise ValueError(f"{rule.name} is not a ranking rule")


def ranked(score: Score, rule: Rule) -> Callable[[Evidence, int, np.random.Generator], QueryResult]:
    """The selection of a 1-D score (identity aggregation): ``rule`` over ``score.fn(ev)`` ``[N]``."""
    def run(ev: Evidence, n: int, rng: np.random.Generator) -> QueryResult:
        s = np.asarray(selection._np(score.fn(ev)), dtype=np.float64)
        pos = rank(rule, s, n, rng, ev.beta())
        detail = {"beta": ev.beta()} if rule.uses_beta else {}
        return QueryResult(ev.positions_to_ids(pos), s[pos], detail, pool_scores=s)
    return run


# ---------------------------------------------------------------------------------------------
# methods and the registry
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueryMethod:
    domain: str
    name: str
    run: Callable[[Evidence, int, np.random.Generator], QueryResult]
    needs: frozenset
    model: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    description: str = ""
    score: Score | None = None
    rule: Rule = TOPK

    def select(self, evidence: Evidence, n: int, rng: np.random.Generator) -> QueryResult:
        """Validate the request (``n``, β: ``UserError``), run the method, check its result."""
        cands = evidence.candidates
        if cands is None:
            raise RuntimeError(f"evidence for {self.name!r} lacks its candidate ids")
        size = len(cands)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise UserError(f"query size must be an integer, got {n!r}")
        if n <= 0:
            raise UserError(f"query size must be >= 1, got {n}")
        if n > size:
            raise UserError(f"{self.name}: cannot query {n} candidates, only {size} are unlabelled")
        beta = evidence.context.get("beta", 1.0)
        if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(beta)) or float(beta) <= 0:
            raise UserError(f"β must be a finite number > 0, got {beta!r}")
        res = self.run(evidence, int(n), rng)
        if not isinstance(res, QueryResult):
            raise RuntimeError(f"query method {self.name!r} returned {type(res).__name__}, not a QueryResult")
        if res.ids.shape != (n,) or res.scores.shape != (n,):
            raise RuntimeError(f"query method {self.name!r} returned {res.ids.shape} ids / {res.scores.shape} scores, wanted {n}")
        if len(np.unique(res.ids)) != n:
            raise RuntimeError(f"query method {self.name!r} returned duplicate picks")
        if not _contains(cands, res.ids).all():
            raise RuntimeError(f"query method {self.name!r} picked ids that are not unlabelled candidates")
        if not np.isfinite(res.scores).all():
            raise RuntimeError(f"query method {self.name!r} returned non-finite scores")
        res.detail = {"method": self.name, **({"score": self.score.name} if self.score else {}),
                      "rule": self.rule.name, **res.detail}
        return res


REPLAY = Rule("replay", description="the picks of an earlier run, cycle by cycle")


def replay(method: QueryMethod, picks: list, source: str) -> QueryMethod:
    """An (unregistered) method that picks in cycle k exactly what an earlier run of ``method`` picked
    in cycle k — the thesis' "Precomputed" training-length variant (§7.4.4: another training length on
    the fixed query trajectory of the 200-epoch runs).  It needs no evidence, so no query-time
    inference runs; a pick that is not an unlabelled candidate here (another starting budget or query
    setting) is a one-line error."""
    picks = [np.asarray(p, dtype=np.int64) for p in picks]

    def run(ev: Evidence, n: int, rng: np.random.Generator) -> QueryResult:
        k = int(ev.context.get("cycle", 0))
        if k >= len(picks):
            raise UserError(f"{source} holds queries for {len(picks)} cycle(s); cycle {k + 1} has none to replay")
        ids = picks[k]
        if len(ids) != n:
            raise UserError(f"{source} queried {len(ids)} candidates in cycle {k + 1}, this run asks for {n}")
        if not _contains(ev.candidates, ids).all():
            raise UserError(f"the queries of {source} (cycle {k + 1}) are not unlabelled candidates here: the runs "
                            "differ in starting budget or query setting")
        return QueryResult(ids, np.zeros(n), {"replayed_from": source, "replayed_method": method.name})
    return QueryMethod(method.domain, method.name, run, frozenset(), {}, f"{method.label} (precomputed)",
                       f"the queries of {source}", None, REPLAY)


def _contains(cands, ids: np.ndarray) -> np.ndarray:
    if hasattr(cands, "contains"):
        return np.asarray(cands.contains(ids), dtype=bool)
    return np.isin(ids, np.asarray(cands))


_REGISTRY: dict[tuple[str, str], QueryMethod] = {}
_ALIASES: dict[tuple[str, str], str] = {}


def _add(m: QueryMethod) -> QueryMethod:
    key = (m.domain, m.name)
    if key in _REGISTRY:
        raise ValueError(f"query method {m.name!r} registered twice in domain {m.domain!r}")
    _REGISTRY[key] = m
    return m


def register(domain: str, name: str, *, needs: Iterable[str] = (), model: Mapping[str, Any] | None = None,
             label: str = "", description: str = "", rule: Rule = TOPK, score: Score | None = None):
    """Decorator: register ``fn(ev, n, rng) -> QueryResult`` as method ``name`` of ``domain``."""
    def deco(fn):
        _add(QueryMethod(domain, name, fn, frozenset(needs), dict(model or {}), label or name,
                         description or (fn.__doc__ or "").strip().split("\n")[0], score, rule))
        return fn
    return deco


def register_scored(domain: str, score: Score, select: Callable[[Score, Rule], Callable], *,
                    rules: Iterable[Rule] = RANK_RULES, needs: Iterable[str] = ()) -> list[QueryMethod]:
    """Register one method per rule for ``score``: ``<score>`` (top-k), ``power_<score>``,
    ``softrank_<score>``.  ``select(score, rule)`` builds the domain's selection (``ranked`` for 1-D
    scores); ``needs`` are extra evidence kinds the selection reads."""
    out = []
    for rule in rules:
        short = score.short or score.label or score.name
        label = (score.label or score.name) if rule is TOPK else f"{rule.label_prefix}{short}"
        desc = score.description if rule is TOPK else f"{rule.label_prefix}{short}: {rule.description}"
        out.append(_add(QueryMethod(domain, f"{rule.prefix}{score.name}", select(score, rule),
                                    frozenset(score.needs) | frozenset(needs), dict(score.model), label, desc,
                                    score, rule)))
    return out


def alias(domain: str, old: str, new: str) -> None:
    """Let an old method name (e.g. from an older run directory) resolve to ``new``."""
    _ALIASES[(domain, old)] = new


def canonical(domain: str, name: str) -> str:
    return _ALIASES.get((domain, name), name)


def names(domain: str) -> list[str]:
    return sorted(n for d, n in _REGISTRY if d == domain)


def domains() -> list[str]:
    return sorted({d for d, _ in _REGISTRY})


def methods(domain: str | None = None) -> list[QueryMethod]:
    return [m for (d, _), m in sorted(_REGISTRY.items()) if domain is None or d == domain]


def get(domain: str, name: str) -> QueryMethod:
    key = (domain, canonical(domain, name))
    if key not in _REGISTRY:
        raise UserError(f"unknown {domain} query method {name!r}; valid: {', '.join(names(domain))}")
    return _REGISTRY[key]


def upgrade_config(cfg: dict) -> dict:
    """An AL run config as written today, from any older run directory (mapped on read): method
    names through the aliases (segmentation wrote ``registry_name: seg_<name>`` beside ``method``),
    and β = 1 where the config predates the β parameter."""
    if not isinstance(cfg, dict) or "method" not in cfg:
        return cfg
    cfg = dict(cfg)
    cfg.pop("registry_name", None)
    cfg["method"] = canonical(str(cfg.get("experiment", "")), str(cfg["method"]))
    cfg.setdefault("beta", 1.0)
    return cfg
