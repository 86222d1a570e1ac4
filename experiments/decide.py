"""Will active learning pay off on my problem?  The decision report of thesis ch. 4 (eqs. 4.1–4.2).

    python -m experiments.decide runs/classification --label-cost 2.5 --gpu-hour 1.2
    python -m experiments.decide runs/segmentation/phantoms --label-cost 40 --gpu-hour 2 --overhead 500 --baseline random_fg33

From AL runs (any domain with budget curves; at least the baseline and one method, ≥ 2 seeds):

* **annotation reduction r** per method and setting — the labels Random needs to reach the
  method's performance minus the labels the method used, at every budget after the start
  (interpolated on the mean curves), summarised by its median over budgets, in labels and as % of
  the budget, with a bootstrap CI over seeds;
* **evidence E[r] > 0** per fingerprint (domain, dataset, regime, paradigm, imbalance): one-sided
  t-test of the per-seed r (paired with Random by seed id);
* **cost model** eq. 4.1: C_AL − C_baseline = −r · label-cost + overhead, the overhead measured from
  the runs' own train + query timings × --gpu-hour, plus --overhead;
* **verdict** per fingerprint: *use AL (method X)*, *no evidence* or *do not use AL*, with the risk:
  how often the method was significantly below Random (PPM lose share).

Writes ``decision.md``, ``decision.csv`` (per fingerprint and method), ``decision_settings.csv``,
``r.png`` and ``report.html`` (the full report of ``experiments.report`` with the priced decision)
to ``--out`` (default: the first path).  The timings are those of the machine that ran the
benchmark; the verdict is an expectation over the problem class the runs stand for, not a guarantee
for one new dataset (the validation paradox, thesis §4.2).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from core.analysis import decision as dec
from core.errors import UserError
from core.store import atomic_write_text
from experiments.common import Parser, main_guard
from experiments.report import Analysis, add_analysis_args, add_cost_args, output_dir, validate, write, writing
from experiments.runs import load


def build_parser() -> Parser:
    p = Parser(prog="python -m experiments.decide", description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 1)[1])
    add_analysis_args(p)
    add_cost_args(p.add_argument_group("prices (eq. 4.1)"), required=True)
    return p


def check_inputs(col, baseline: str) -> None:
    """One clear line for inputs a decision cannot be made from."""
    methods = col.methods
    if len(methods) < 2:
        raise UserError(f"decide needs the baseline and at least one AL method; the runs hold only: {', '.join(methods)}")
    per = col.runs.groupby(["setting", "method"])["seed"].nunique()
    if per.max() < 2:
        raise UserError("decide needs ≥ 2 seeds per method and setting (for the CI and the test); every run set "
                        f"here has 1 (e.g. {per.index[0][1]} in {per.index[0][0]}) — rerun with --seeds 2 or more")
    have = set(col.runs.loc[col.runs["method"] == baseline, "setting"])
    if not have:
        raise UserError(f"no runs of the baseline {baseline!r}")


def decision_markdown(an: Analysis) -> str:
    d, col = an.decision, an.col
    c = d.costs
    lines = ["# AL decision report (thesis ch. 4, eqs. 4.1–4.2)", "",
             f"- runs: {len(col.runs)} ({col.domain}, metric {col.metric}), settings: {', '.join(col.settings)}",
             f"- baseline: **{d.baseline}**; methods: {', '.join(m for m in col.methods if m != d.baseline)}",
             f"- prices: {c.label_cost:g} EUR per label, {c.gpu_hour:g} EUR per compute hour, fixed overhead "
             f"{c.overhead:g} EUR" + (f"; target {col.metric} = {c.target:g}" if c.target is not None else ""),
             f"- α = {d.alpha} (one-sided t-test of E[r] > 0 over per-seed r; PPM paired t-test)", ""]
    for v in d.verdicts.to_dict("records"):
        lines += [f"## {v['fingerprint']}: **{v['verdict']}**", "", v["because"], ""]
        g = d.fingerprints[d.fingerprints["fingerprint"] == v["fingerprint"]]
        lines += ["| method | E[r] (labels) | % of budget | 95 % CI | p (E[r] > 0) | evidence | overhead (h / EUR) | "
                  f"net saving (EUR) | below {d.baseline} (PPM) | above {d.baseline} (PPM) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in g.to_dict("records"):
            f = _f
            lb = " (lower bound)" if r.get("lower_bound") else ""
            lines.append(f"| {r['method']} | {f(r.get('E_r'), '.0f')}{lb} | {f(r.get('r_pct'), '.0f')} % | "
                         f"[{f(r.get('ci_low'), '.0f')}, {f(r.get('ci_high'), '.0f')}] | {f(r.get('p_greater'), '.3g')} | "
                         f"{r.get('evidence', r.get('reason', 'n/a'))} | {f(r.get('overhead_h'), '.3f')} / "
                         f"{f(r.get('overhead_eur'), '.2f')} | {f(r.get('saving_eur'), '.2f')} | "
                         f"{f(100 * r['ppm_lose'] if 'ppm_lose' in r and r['ppm_lose'] == r['ppm_lose'] else None, '.0f')} % | "
                         f"{f(100 * r['ppm_win'] if 'ppm_win' in r and r['ppm_win'] == r['ppm_win'] else None, '.0f')} % |")
        lines.append("")
    if c.target is not None and "r_target" in d.settings:
        lines += [f"### Labels to reach {col.metric} = {c.target:g}", "",
                  f"| setting | method | method needs | {d.baseline} needs | r | note |", "|---|---|---|---|---|---|"]
        for r in d.settings.to_dict("records"):
            lines.append(f"| {r['setting']} | {r['method']} | {_f(r.get('target_budget_method'), '.0f')} | "
                         f"{_f(r.get('target_budget_random'), '.0f')} | {_f(r.get('r_target'), '.0f')} | "
                         f"{r.get('target_note', '') if isinstance(r.get('target_note'), str) else ''} |")
        lines.append("")
    if d.notes:
        lines += ["## Caveats", ""] + [f"- {n}" for n in d.notes] + [""]
    lines += ["## How to read this", "",
              f"- r > 0: {d.baseline} needs r more labels for the same performance (AL saves r labels); r < 0: AL "
              "needs more.",
              f"- Censored budgets (the method above {d.baseline}'s best point) give only a lower bound and are "
              "counted apart; a setting where every budget is censored reports that lower bound.",
              "- The overhead is the measured train + query time of all AL cycles minus the one final training a "
              f"{d.baseline} project needs anyway, on the machine that ran the benchmark.",
              "- The verdict is an expectation over the problem class these runs stand for (their fingerprint), not "
              "a guarantee for one new dataset: AL cannot be validated on the problem it is used on (§4.2).", ""]
    return "\n".join(lines)


def _f(v, fmt: str) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not np.isfinite(x) else format(x, fmt)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = output_dir(args)   # before any work
    col = load(args.paths, args.metric, require_curves=True)
    validate(args, col)
    from experiments.report import resolve_baseline
    baseline = resolve_baseline(col, args.baseline, required=True)
    check_inputs(col, baseline)
    costs = dec.Costs(args.label_cost, args.gpu_hour, args.overhead, args.target_metric)
    args.baseline = baseline
    an = Analysis(col, args, costs, baseline_required=True)
    md = decision_markdown(an)
    with writing(out):
        files = write(an, out, title=f"realistic-al decision report — {col.domain}")
        atomic_write_text(out / "decision.md", md)
        atomic_write_text(out / "decision.csv", an.decision.fingerprints.to_csv(index=False))
        atomic_write_text(out / "decision_settings.csv", an.decision.settings.to_csv(index=False))
    for v in an.decision.verdicts.to_dict("records"):
        print(f"{v['fingerprint']}: {v['verdict']} — {v['because']}")
    print(f"wrote decision.md, decision.csv, decision_settings.csv, {', '.join(files)} to {out}")
    return 0


if __name__ == "__main__":
    main_guard(main)
