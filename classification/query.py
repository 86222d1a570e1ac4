"""Classification query methods (thesis §3.2, ch. 5) in the shared registry, domain ``classification``.

Scores (identity aggregation: one value per image) composed with the ranking rules — each gives a
top-k, a ``power_`` and a ``softrank_`` method — plus the set-based methods:

* ``entropy`` / ``power_entropy`` / ``softrank_entropy`` — predictive entropy (eq. 3.1);
* ``bald`` / ``power_bald`` / ``softrank_bald`` — mutual information of 50 head-only MC-dropout
  samples (eq. 3.2; the model is trained with dropout 0.5 before the head);
* ``random``; ``coreset`` — k-center greedy on penultimate features (eq. 3.6); ``badge`` —
  k-means++ seeding on the factorised last-layer gradient embedding (eq. 3.7).

Evidence kinds (``classification.experiment`` computes only those a method ``needs``, from one
backbone pass over the unlabelled pool): ``probs`` [N, C] (MC-averaged for a dropout head),
``mc_probs`` [N, M, C], ``features`` [N, D], ``labelled_features`` [L, D] and ``badge``
(probs [N, C], head input h [N, D]).

    from classification import query
    result = core.query.get("classification", "power_bald").select(evidence, 100, rng)
"""
from __future__ import annotations

import numpy as np

from core import query, selection, uncertainty
from core.query import KCENTER, KMEANSPP, UNIFORM, QueryResult, Score

DOMAIN = "classification"
EVIDENCE = ("probs", "mc_probs", "features", "labelled_features", "badge")

ENTROPY = Score("entropy", lambda ev: uncertainty.entropy(ev["probs"]), needs=("probs",), label="Entropy",
                description="top-k predictive entropy (eq. 3.1)")
BALD = Score("bald", lambda ev: uncertainty.mutual_information(ev["mc_probs"]), needs=("mc_probs",),
             model={"dropout": 0.5}, label="BALD",
             description="top-k BALD mutual information, 50 head-only MC-dropout samples (eq. 3.2)")
SCORES = (ENTROPY, BALD)
for _score in SCORES:
    query.register_scored(DOMAIN, _score, query.ranked)


@query.register(DOMAIN, "random", rule=UNIFORM, label="Random", description="uniform random sample of the pool")
def _random(ev, n, rng):
    pos = rng.choice(len(ev.candidates), size=n, replace=False)
    return QueryResult(ev.positions_to_ids(pos), np.zeros(n))


@query.register(DOMAIN, "coreset", needs=("features", "labelled_features"), rule=KCENTER, label="Core-Set",
                description="Core-Set: k-center greedy on penultimate features (eq. 3.6)")
def _coreset(ev, n, rng):
    """Scores: squared distance to the nearest centre at pick time; pool: to the labelled set."""
    pos, d2, pool_d2 = selection.kcenter_greedy(ev["features"], ev["labelled_features"], n, return_scores=True)
    return QueryResult(ev.positions_to_ids(pos), d2, pool_scores=pool_d2)


@query.register(DOMAIN, "badge", needs=("badge",), rule=KMEANSPP, label="BADGE",
                description="BADGE: k-means++ seeding on factorised last-layer gradient embeddings (eq. 3.7)")
def _badge(ev, n, rng):
    """Scores: D² of each pick when drawn; pool: squared gradient-embedding norms."""
    probs, h = ev["badge"]
    pos, d2, norms = selection.kmeanspp_badge(probs, h, n, rng, return_scores=True)
    return QueryResult(ev.positions_to_ids(pos), d2, pool_scores=norms)
