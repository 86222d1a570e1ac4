"""3D segmentation active learning with partial 3D-patch annotation (nnActive) and ClaSP PE.

Modules: ``msd`` (the one nnU-Net raw / MSD reader and writer, also used by the uncertainty
testbed), ``data`` (split, resampling, cache), ``phantoms`` (synthetic default in MSD layout),
``plans`` (presets, Label Regimes, query patch sizes, nnU-Net-style network plan), ``patches``
(all-window mean scoring, the patch pool, greedy non-overlapping selection), ``training`` (masked
Dice+CE, region sampling, CV folds, DynUNet ensemble, sliding-window inference), ``query`` (the
query methods, registered in ``core.query`` under the domain ``segmentation`` — import it to use
them), ``experiment`` (the domain plugged into ``core.loop``), ``report`` (pictures of queried patches).
"""
