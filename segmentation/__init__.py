"""3D segmentation active learning with partial 3D-patch annotation (nnActive) and ClaSP PE.

Modules: ``msd`` (the one nnU-Net raw / MSD reader and writer, also used by the uncertainty
testbed), ``data`` (split, resampling, cache), ``phantoms`` (synthetic default in MSD layout),
``realdata`` (real brain anatomy from the MNI ICBM152 template as an MSD dataset), ``plans``
(presets, Label Regimes, query patch sizes, mirroring policy, nnU-Net planning rules), ``patches``
(all-window mean scoring, the patch pool, greedy non-overlapping selection), ``training`` (masked
Dice+CE, region sampling, CV folds, DynUNet ensemble, sliding-window inference), ``augment``
(nnU-Net's augmentation with MONAI transforms), ``nnunet`` (the nnU-Net v2 backend), ``query`` (the
query methods, registered in ``core.query`` under the domain ``segmentation`` — import it to use
them), ``start`` (the starting budget, with the small-dataset rule), ``experiment`` (the domain
plugged into ``core.loop``), ``report`` (pictures of queried patches).
"""
