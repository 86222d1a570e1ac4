"""Which tasks of the testbed a dataset supports, decided before any job runs.

The tasks need different things from the data (``uncertainty.md`` §9–§10):

==============================  ===========================================================
always                          ``seg`` (Dice), ``fd`` (AURC / E-AURC), ``calib`` (ACE), ``al``
                                (AL on the shifted test set, or on the i.i.d. test set when
                                real data has no shift; toy scenario 1: skipped, the toy
                                protocol measures AL on shifted cases only)
≥ 2 raters per case             ``am`` (NCC, GED) and the NCC half of ``separation``
                                (Table B.4a: the aleatoric reference is the rater variance)
a shift (shifted cases)         ``ood`` (AUROC on the pool) and the AUROC half of
                                ``separation`` (Table B.4b)
a background class              the ``threshold`` aggregation (λ from the foreground share)
==============================  ===========================================================

:func:`plan` returns the tasks and aggregations that run and one :class:`Skip` per task (or
half-task) that cannot, with the reason and what to add to ``dataset.json`` (or which flag to
pass).  An empty plan is a ``UserError`` before anything is written.  It also flags small samples:
any evaluated group with fewer than :data:`SMALL_N` cases gets a warning (the summary then gives
95 % bootstrap confidence intervals, ``uncertainty.confidence``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.errors import UserError

from .data import SegData

SMALL_N = 20      # fewer cases than this in an evaluated group → warning + bootstrap CIs
TASK_NAMES = {"separation": "separation study", "seg": "segmentation (Dice)", "ood": "OoD detection (AUROC)",
              "fd": "failure detection (AURC)", "calib": "calibration (ACE)", "al": "active learning",
              "am": "ambiguity modelling (NCC, GED)"}


@dataclass(frozen=True)
class Skip:
    task: str          # task (or "aggregation") that does not run, or runs only in part
    part: str          # what exactly is missing ("" = the whole task)
    reason: str
    fix: str           # what to add to dataset.json / which flag to pass

    def line(self) -> str:
        what = f"{self.task} ({self.part})" if self.part else f"{self.task} — {TASK_NAMES.get(self.task, self.task)}"
        return f"skipped {what}: {self.reason}; to run it: {self.fix}"


@dataclass
class Plan:
    tasks: list
    aggregations: list
    skipped: list = field(default_factory=list)
    ncc: bool = True              # NCC half of the separation study (and AM) runs
    auroc: bool = True            # AUROC half of the separation study runs
    al_split: str = "test_ood"    # where AL measures its Dice
    warnings: list = field(default_factory=list)
    small: bool = False           # some evaluated group has fewer than SMALL_N cases

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skipped"] = [asdict(s) | {"line": s.line()} for s in self.skipped]
        return d


def _fixes(kind: str) -> dict:
    """What to add, per data source (``msd`` folders get dataset.json instructions)."""
    if kind == "msd":
        return {"raters": "add one label file per rater, labelsTr/<case>_00.nii.gz, labelsTr/<case>_01.nii.gz, ... "
                          "(≥ 2 per case; MSD style: a list of paths under \"label\" in dataset.json's \"training\" "
                          "entries)",
                "shift": "add \"values\": {\"ood\": [\"<case>\", ...]} to dataset.json (the shifted cases), or pass "
                         "--shift intensity|noise|blur|resolution to build a shifted test set from held-out cases",
                "ambiguous": "raters must disagree on some i.i.d. test cases (check the rater files, or list a "
                             "fixed values.splits with ambiguous cases in test_iid)"}
    if kind.startswith("toy"):
        return {"raters": "use the toy data's 3 raters (any scenario)",
                "shift": "use a toy scenario with shifted cases (--scenario mixed, 2, 3a or 3b)",
                "ambiguous": "use a scenario with blurred i.i.d. test cases (--scenario 1, 3b or mixed)"}
    return {"raters": "this dataset has one rater per case", "shift": "pass --shift or use a dataset with a shift",
            "ambiguous": "the raters never disagree on the i.i.d. test cases"}


def plan(data: SegData, tasks, aggregations, kind: str = "msd") -> Plan:
    """The tasks and aggregations of a run on ``data`` (see the module doc)."""
    fx = _fixes(kind)
    sp = data.splits
    ti, to, pool = sp["test_iid"], sp["test_ood"], sp["pool"]
    raters = data.n_raters
    multi = raters >= 2
    amb = bool(ti.ambiguous.any())
    shifted = len(to) > 0 and bool(pool.ood.any()) and bool((~pool.ood).any())
    skipped: list[Skip] = []
    run = []
    ncc_ok = multi and amb
    auroc_ok = len(to) > 0
    ncc_reason = (f"one rater per case (the aleatoric reference is the variance between ≥ 2 raters)" if not multi else
                  f"the {raters} raters never disagree on the {len(ti)} i.i.d. test cases")
    for t in tasks:
        if t == "separation":
            if not ncc_ok and not auroc_ok:
                skipped.append(Skip(t, "", f"{ncc_reason}, and no shifted test cases",
                                    f"{fx['raters'] if not multi else fx['ambiguous']}; {fx['shift']}"))
                continue
            if not ncc_ok:
                skipped.append(Skip(t, "NCC, Table B.4a", ncc_reason, fx["raters"] if not multi else fx["ambiguous"]))
            if not auroc_ok:
                skipped.append(Skip(t, "AUROC, Table B.4b", "no shifted (OoD) test cases", fx["shift"]))
        elif t == "am" and not multi:
            skipped.append(Skip(t, "", ncc_reason, fx["raters"]))
            continue
        elif t == "ood" and not shifted:
            skipped.append(Skip(t, "", "no shifted (OoD) cases in the unlabelled pool", fx["shift"]))
            continue
        elif t == "al" and kind.startswith("toy") and not shifted:
            skipped.append(Skip(t, "", "the toy protocol measures AL on the shifted test set, and this scenario has "
                                "no shifted cases", fx["shift"]))
            continue
        elif t == "al" and len(pool) < 2:
            skipped.append(Skip(t, "", f"the unlabelled pool has {len(pool)} case(s)", "use more cases (≥ 2 in the pool)"))
            continue
        run.append(t)
    aggs = []
    for a in aggregations:
        if a == "threshold" and not data.background:
            skipped.append(Skip("aggregation", "threshold", "no background class (λ is fitted from the predicted "
                                "foreground share; thesis B.6: not applicable to GTA5/Cityscapes)",
                                "use the image or patch aggregation"))
            continue
        aggs.append(a)
    if not run:
        raise UserError(f"{data.name}: none of the requested tasks can run — "
                        + "; ".join(s.line().removeprefix("skipped ") for s in skipped if s.task != "aggregation"))
    if not aggs and any(t in run for t in ("separation", "ood", "fd", "al")):
        raise UserError(f"{data.name}: none of the requested aggregations can run (threshold needs a background class)")
    p = Plan(run, aggs, skipped, ncc=ncc_ok, auroc=auroc_ok, al_split="test_ood" if len(to) else "test_iid")
    p.warnings, p.small = small_sample_warnings(data, run)
    return p


def expected_skips(n_raters: int, shifted: bool, tasks, kind: str = "msd") -> list[Skip]:
    """The skips :func:`plan` will make, from what dataset.json and the file names tell (``--dry-run``:
    no volume decoded; ambiguity and split sizes are only known after loading)."""
    fx = _fixes(kind)
    one = "one rater per case (the aleatoric reference is the variance between ≥ 2 raters)"
    out = []
    for t in tasks:
        if t == "separation" and n_raters < 2 and not shifted:
            out.append(Skip(t, "", f"{one}, and no shifted test cases", f"{fx['raters']}; {fx['shift']}"))
        elif t == "separation" and n_raters < 2:
            out.append(Skip(t, "NCC, Table B.4a", one, fx["raters"]))
        elif t == "separation" and not shifted:
            out.append(Skip(t, "AUROC, Table B.4b", "no shifted (OoD) test cases", fx["shift"]))
        elif t == "am" and n_raters < 2:
            out.append(Skip(t, "", one, fx["raters"]))
        elif t == "ood" and not shifted:
            out.append(Skip(t, "", "no shifted (OoD) cases in the unlabelled pool", fx["shift"]))
    return out


def small_sample_warnings(data: SegData, tasks) -> tuple[list[str], bool]:
    sp = data.splits
    groups = [("i.i.d. test set", len(sp["test_iid"]))]
    if len(sp["test_ood"]):
        groups.append(("shifted test set", len(sp["test_ood"])))
    pool = sp["pool"]
    if "ood" in tasks or "al" in tasks:
        if pool.ood.any():
            groups += [("i.i.d. pool", int((~pool.ood).sum())), ("shifted pool", int(pool.ood.sum()))]
        else:
            groups.append(("pool", len(pool)))
    small = [(g, n) for g, n in groups if n < SMALL_N]
    if not small:
        return [], False
    out = [f"small sample: {', '.join(f'{g} {n} case(s)' for g, n in small)} (fewer than {SMALL_N}); "
           "every number below rests on these few cases — the summary gives 95 % bootstrap confidence intervals"]
    if len(sp["test_ood"]):
        n0, n1 = len(sp["test_iid"]), len(sp["test_ood"])
        out.append(f"small sample: the separation AUROC compares {n0} i.i.d. with {n1} shifted test case(s) and "
                   f"moves in steps of 1/{n0 * n1}")
    if pool.ood.any() and "ood" in tasks:
        n0, n1 = int((~pool.ood).sum()), int(pool.ood.sum())
        out.append(f"small sample: the OoD-detection AUROC compares {n0} i.i.d. with {n1} shifted pool case(s) and "
                   f"moves in steps of 1/{n0 * n1}")
    return out, True
