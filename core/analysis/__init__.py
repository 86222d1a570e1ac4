"""Cross-experiment analysis: the thesis' statistics from any set of runs (domain-free, pandas in /
pandas out).

* :mod:`.tidy` — run directories → ``runs`` / ``curves`` / ``scores`` tables;
* :mod:`.ranks` — mean ranks ± SE bootstrapped over seeds (Fig. 7.4, 8.2), leave-one-out (app. C.8);
* :mod:`.significance` — Friedman + Nemenyi (Fig. 8.2, D.2), Kendall's τ (Tables 7.2–7.6),
  mean ± 95 % CI (Table 8.1);
* :mod:`.ppm` — pairwise penalty matrix paired by seed id, aggregate + mean row, win/lose/tie (Fig. 7.2, 7.3);
* :mod:`.decision` — annotation reduction r, the cost model and verdict of ch. 4 (eqs. 4.1–4.2);
* :mod:`.plots`, :mod:`.html` — ranks.png, cd.png, winlose.png, fgeff.png and one self-contained report.html.

Example::

    from core.analysis import ranks
    table = ranks.mean_ranks(collection.scores, group_by=["dataset"])
"""
