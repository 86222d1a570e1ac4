"""3D segmentation active learning with partial 3D-patch annotation (nnActive) and ClaSP PE.

Modules: ``data`` (MSD / nnU-Net raw loader, split, resampling, cache), ``phantoms`` (synthetic
default in MSD layout), ``plans`` (presets, Label Regimes, query patch sizes, nnU-Net-style network
plan), ``patches`` (all-window mean scoring, the patch pool, greedy non-overlapping selection),
``training`` (masked Dice+CE, region sampling, CV folds, DynUNet ensemble, sliding-window
inference), ``query`` (the query methods, registered in ``core.query`` with
``domain="segmentation"``), ``experiment`` (the domain plugged into ``core.loop``), ``viz``.
"""
from . import query  # noqa: F401  (registers the segmentation query methods)
