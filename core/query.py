"""Registry of named query methods, shared by every domain.

A query method is a function ``fn(evidence, n, rng) -> np.ndarray[int]`` that returns ``n`` distinct
*candidate positions* (indices into the evidence arrays, i.e. into the list of unlabelled candidates
the predictor scored) — never dataset ids; the caller maps positions to ids.  Each method declares
the evidence kinds it needs so the domain predictor computes each kind exactly once per cycle, and
the model it needs (e.g. ``{"dropout": 0.5}`` for BALD's Bayesian head).

Adding a method is one decorated function::

    @register("entropy", needs=("probs",), description="top-k predictive entropy")
    def _entropy(ev, n, rng):
        return selection.topk(uncertainty.predictive_entropy(ev["probs"]), n)

Domains register their own methods with ``domain="segmentation"`` etc.; a method with
``domain="any"`` is offered everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from . import selection, uncertainty
from .errors import UserError


class Evidence(Mapping):
    """Lazy, cached evidence for one query: ``ev["probs"]`` computes the kind on first access.

    ``providers`` maps a kind to a zero-argument callable; ``context`` holds plain values
    (e.g. labelled features, the cycle index, the query schedule) exposed as ``ev.context``.
    """

    def __init__(self, providers: Mapping[str, Callable[[], Any]] | None = None,
                 values: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None):
        self._providers = dict(providers or {})
        self._cache: dict[str, Any] = dict(values or {})
        self.context: dict[str, Any] = dict(context or {})

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


@dataclass(frozen=True)
class QueryMethod:
    name: str
    fn: Callable[[Evidence, int, np.random.Generator], np.ndarray]
    needs: frozenset
    domain: str = "any"
    model: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def select(self, evidence: Evidence, n: int, rng: np.random.Generator) -> np.ndarray:
        picks = np.asarray(self.fn(evidence, n, rng), dtype=np.int64)
        if picks.ndim != 1 or len(picks) != n:
            raise RuntimeError(f"query method {self.name!r} returned {picks.shape} picks, wanted {n}")
        if len(np.unique(picks)) != n:
            raise RuntimeError(f"query method {self.name!r} returned duplicate picks")
        return picks


_REGISTRY: dict[str, QueryMethod] = {}


def register(name: str, *, needs: Iterable[str] = (), domain: str = "any",
             model: Mapping[str, Any] | None = None, description: str = ""):
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"query method {name!r} registered twice")
        _REGISTRY[name] = QueryMethod(name, fn, frozenset(needs), domain, dict(model or {}),
                                      description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return deco


def names(domain: str | None = None) -> list[str]:
    return sorted(k for k, m in _REGISTRY.items() if domain is None or m.domain in (domain, "any"))


def get(name: str, domain: str | None = None) -> QueryMethod:
    valid = names(domain)
    if name not in valid:
        raise UserError(f"unknown query method {name!r}; valid: {', '.join(valid)}")
    return _REGISTRY[name]


# ---------------------------------------------------------------------------------------------
# Generic methods (any domain whose evidence has the named kinds).
# Evidence kinds used here:
#   "n"          number of unlabelled candidates (int)
#   "probs"      deterministic probabilities [N, C]
#   "mc_probs"   MC / ensemble probabilities [N, M, C]
#   "features"   penultimate features of the candidates [N, D]
#   "labelled_features"  features of the labelled set [L, D]
#   "badge"      (probs [N, C], head-input features [N, D]) for the factorised gradient embedding
# ---------------------------------------------------------------------------------------------

def _power_beta(ev: Evidence) -> float:
    return float(ev.context.get("beta", 1.0))


@register("random", needs=("n",), description="uniform random sample of the pool")
def _random(ev, n, rng):
    return rng.choice(int(ev["n"]), size=n, replace=False)


@register("entropy", needs=("probs",), description="top-k predictive entropy (eq. 3.1)")
def _entropy(ev, n, rng):
    return selection.topk(uncertainty.entropy(ev["probs"]), n)


@register("bald", needs=("mc_probs",), model={"dropout": 0.5},
          description="top-k BALD mutual information, 50 head-only MC-dropout samples (eq. 3.2)")
def _bald(ev, n, rng):
    return selection.topk(uncertainty.mutual_information(ev["mc_probs"]), n)


@register("power_bald", needs=("mc_probs",), model={"dropout": 0.5},
          description="PowerBALD: log BALD + Gumbel(0, 1/β) noise, top-k (eq. 3.3)")
def _power_bald(ev, n, rng):
    return selection.power(uncertainty.mutual_information(ev["mc_probs"]), n, rng, beta=_power_beta(ev))


@register("power_entropy", needs=("probs",),
          description="PowerPE: log entropy + Gumbel(0, 1/β) noise, top-k (eq. 3.4)")
def _power_entropy(ev, n, rng):
    return selection.power(uncertainty.entropy(ev["probs"]), n, rng, beta=_power_beta(ev))


@register("softrank_bald", needs=("mc_probs",), model={"dropout": 0.5},
          description="SoftrankBALD: −log rank + Gumbel(0, 1/β) noise, top-k (eq. 3.5)")
def _softrank_bald(ev, n, rng):
    return selection.softrank(uncertainty.mutual_information(ev["mc_probs"]), n, rng, beta=_power_beta(ev))


@register("coreset", needs=("features", "labelled_features"),
          description="Core-Set: k-center greedy on penultimate features (eq. 3.6)")
def _coreset(ev, n, rng):
    return selection.kcenter_greedy(ev["features"], ev["labelled_features"], n)


@register("badge", needs=("badge",),
          description="BADGE: k-means++ seeding on factorised last-layer gradient embeddings (eq. 3.7)")
def _badge(ev, n, rng):
    probs, h = ev["badge"]
    return selection.kmeanspp_badge(probs, h, n, rng)
