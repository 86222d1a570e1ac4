"""``--backend nnunet``: nnU-Net v2 (``nnunetv2``, optional extra ``[nnunet]``) as the training backend.

nnU-Net does the fingerprinting, planning, preprocessing, training and sliding-window prediction;
this module only writes its inputs and calls its Python API:

* **Folders.** nnU-Net's ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` live in the
  run directory (``WORK/raw``, ``WORK/preprocessed``, ``WORK/results``); they are set in
  ``os.environ`` only while an nnU-Net call runs (nnunetv2 ≥ 2.6 reads them lazily), so the user sets
  nothing and several runs in one process never share a folder.  nnU-Net's background workers are
  off (``nnUNet_n_proc_DA=0``) and ``torch.compile`` is off on CPU.
* **Raw dataset.** Every train+pool image of the prepared dataset (resampled to the target spacing,
  as nnActive's ``init_resample_from_id`` does, so patch coordinates stay valid) is written as
  ``imagesTr/CASE_0000.nii.gz``; ``dataset.json`` declares nnU-Net's own ignore label
  (``"ignore": C+1``, the highest label).  Fingerprint and plans (``3d_fullres``, default planner)
  are made once per run from the fully labelled train+pool set, as nnActive does.
* **Each loop.** ``labelsTr`` gets the partial annotation — ground truth inside the annotated
  patches, ``ignore`` elsewhere — and the cases whose labels changed are preprocessed again with
  nnU-Net's ``DefaultPreprocessor``; ``splits_final.json`` holds our K folds over the images with
  annotation (so fully unannotated images are never trained on); fold k is trained from scratch
  by ``nnUNetTrainer`` (``nnUNetTrainerNoMirroring`` for left/right-label datasets) for the preset's
  length: the thesis preset is nnActive's 200 epochs × 250 iterations, shorter presets use fewer
  iterations per epoch (nnU-Net's short variants).
* **Prediction.** ``nnUNetPredictor`` (Gaussian sliding window; tile step 0.75 at query time, 0.5
  with mirroring TTA on the test set) per fold; the probabilities nnU-Net resamples back to the
  input shape are the ``[K, C+1, X, Y, Z]`` evidence of the query methods.

Training is seeded per (seed, loop, fold) (torch/numpy/random) with single-process data loading,
so on CPU a rerun reproduces a run; nnActive itself does not seed training.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core import seeds
from core.errors import UserError

DATASET_ID = 990
CONFIG = "3d_fullres"
PLANS = "nnUNetPlans"
INSTALL_HINT = "pip install 'realistic-al[nnunet]'  (or: pip install nnunetv2)"


def available() -> bool:
    import importlib.util
    return importlib.util.find_spec("nnunetv2") is not None


def require() -> None:
    if not available():
        raise UserError(f"--backend nnunet needs nnU-Net v2, which is not installed: {INSTALL_HINT}")


def schedule(iterations: int) -> tuple[int, int]:
    """(epochs, iterations per epoch) for a total length: nnU-Net's 250 iterations per epoch where
    the length allows (the thesis' 200 epochs = 50 000 iterations), else the fewest epochs of at most
    250 iterations that add up to the length (±1 per epoch)."""
    it = max(int(iterations), 1)
    epochs = -(-it // 250)
    return epochs, max(int(round(it / epochs)), 1)


@contextlib.contextmanager
def nnunet_env(work: Path, log: Path | None = None, results: Path | None = None, n_proc_da: int = 0):
    """nnU-Net's folder variables (and quiet, single-process settings) for the duration of a call;
    its console output goes to ``log``; torch's thread count is restored afterwards.
    ``n_proc_da=0`` makes the trainer load batches in-process (planning needs ≥ 1)."""
    n_thr = torch.get_num_threads()
    keys = {"nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "preprocessed"),
            "nnUNet_results": str(results or work / "results"), "nnUNet_n_proc_DA": str(n_proc_da),
            "nnUNet_compile": "f",
            "nnUNet_def_n_proc": "1"}
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    sink = open(log, "a") if log is not None else io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        sink.close()
        torch.set_num_threads(n_thr)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _seed_all(key) -> None:
    """Seed torch / numpy / random for the training of (seed, loop, fold) (seed purpose ``nnunet``)."""
    s = seeds.derive(int(key[0]), "nnunet", *map(int, key[1:]))
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


@dataclass
class NnUNetEnsemble:
    """The K trained folds; :meth:`predict` has the signature of ``training.Ensemble.predict``."""
    backend: "NnUNetBackend"
    folds: list
    fold_ids: list
    folder: Path

    def __post_init__(self):
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        with nnunet_env(self.backend.work, self.backend.log):
            self.predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                             perform_everything_on_device=False, device=torch.device(self.backend.device),
                                             allow_tqdm=False)
            self.predictor.initialize_from_trained_model_folder(str(self.folder), use_folds=tuple(self.fold_ids),
                                                                checkpoint_name="checkpoint_final.pth")
        self.params = list(self.predictor.list_of_parameters)

    @torch.no_grad()
    def predict(self, image: np.ndarray, overlap: float = 0.25, mirror: bool = False) -> torch.Tensor:
        """Softmax maps ``[K, C+1, X, Y, Z]`` of one ``[channels, X, Y, Z]`` image (our axis order;
        nnU-Net's SimpleITK order is the reverse).  ``overlap`` 0.25 ↔ tile step 0.75."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
        p = self.predictor
        p.tile_step_size = 1.0 - float(overlap)
        p.use_mirroring = bool(mirror) and self.backend.mirror
        img = np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(0, 3, 2, 1))
        props = {"spacing": [float(v) for v in reversed(self.backend.spacing)]}
        n_thr = torch.get_num_threads()
        with nnunet_env(self.backend.work, self.backend.log):
            pre = p.configuration_manager.preprocessor_class(verbose=False)
            data, _, props = pre.run_case_npy(img, None, props, p.plans_manager, p.configuration_manager, p.dataset_json)
            x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
            out = []
            for params in self.params:
                p.list_of_parameters = [params]
                logits = p.predict_logits_from_preprocessed_data(x).cpu()
                _, probs = convert_predicted_logits_to_segmentation_with_correct_shape(
                    logits, p.plans_manager, p.configuration_manager, p.label_manager, props,
                    return_probabilities=True, num_threads_torch=n_thr)
                out.append(torch.from_numpy(np.asarray(probs, dtype=np.float32).transpose(0, 3, 2, 1).copy()))
            p.list_of_parameters = self.params
        return torch.stack(out)


class NnUNetBackend:
    """One AL run's nnU-Net dataset, plans and trainings under ``work`` (see module docstring)."""

    def __init__(self, work: Path, data, train_cases: list[int], gt: Callable[[int], np.ndarray], *,
                 iterations: int, device: str = "cpu", mirror: bool = True,
                 progress: Callable[[int], None] | None = None):
        require()
        self.work = Path(work)
        self.data, self.train_cases, self.gt = data, list(train_cases), gt
        self.iterations, self.device, self.mirror = int(iterations), device, bool(mirror)
        self.progress = progress or (lambda n: None)
        self.n_classes = data.n_classes
        self.ignore = self.n_classes + 1
        self.spacing = tuple(float(v) for v in data.spacing)
        self.name = f"Dataset{DATASET_ID:03d}_{''.join(ch for ch in data.name if ch.isalnum())[:30] or 'AL'}"
        self.raw = self.work / "raw" / self.name
        self.pre = self.work / "preprocessed" / self.name
        self.log = self.work / "nnunet.log"
        self.trainer_name = "nnUNetTrainer" if self.mirror else "nnUNetTrainerNoMirroring"

    # -- dataset -------------------------------------------------------------------------------
    def case(self, j: int) -> str:
        return f"case_{j:04d}"

    def _dataset_json(self) -> dict:
        return {"name": self.data.name,
                "description": "written by realistic-al (segmentation.nnunet): train+pool images at the target "
                               "spacing; labelsTr carries the partial annotation, nnU-Net's 'ignore' label elsewhere"}

    def _write_label(self, j: int, lab: np.ndarray) -> bool:
        """Write labelsTr for image j; True when its content changed."""
        import nibabel as nib
        lab = np.asarray(lab).astype(np.uint8 if self.ignore < 255 else np.int16)
        digest = hashlib.sha256(lab.tobytes()).hexdigest()
        stamp = self.raw / "labelsTr" / f".{self.case(j)}.sha"
        if stamp.exists() and stamp.read_text() == digest:
            return False
        nib.save(nib.Nifti1Image(lab, np.diag([*self.spacing, 1.0])), str(self.raw / "labelsTr" / f"{self.case(j)}.nii.gz"))
        stamp.write_text(digest)
        return True

    def _ensure_planned(self) -> None:
        """Raw images + fingerprint + 3d_fullres plans, once per run (on the fully labelled train+pool)."""
        if (self.pre / f"{PLANS}.json").is_file():
            return
        from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, plan_experiments
        from .msd import NewCase, write_layout
        shutil.rmtree(self.raw, ignore_errors=True)
        shutil.rmtree(self.pre, ignore_errors=True)
        cases = (NewCase(self.case(j), list(np.asarray(self.data.image(c), dtype=np.float32)),
                         [np.asarray(self.gt(j)).astype(np.uint8 if self.ignore < 255 else np.int16)])
                 for j, c in enumerate(self.train_cases))
        dj = self._dataset_json()
        write_layout(self.raw, cases, name=dj["name"], class_names=[*self.data.class_names, "ignore"],
                     channel_names=self.data.channel_names, spacing=self.spacing, meta={"description": dj["description"]})
        for j in range(len(self.train_cases)):
            self._write_label(j, self.gt(j))  # stamps, so unchanged labels are not preprocessed again
        with nnunet_env(self.work, self.log, n_proc_da=1):
            extract_fingerprint_dataset(DATASET_ID, num_processes=1, check_dataset_integrity=False, clean=True,
                                        verbose=False, show_progress_bar=False)
            plan_experiments([DATASET_ID])
        if not (self.pre / f"{PLANS}.json").is_file():
            raise RuntimeError(f"nnU-Net planning wrote no plans; see {self.log}")

    def _preprocess(self, cases: list[int]) -> None:
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
        plans = PlansManager(str(self.pre / f"{PLANS}.json"))
        cm = plans.get_configuration(CONFIG)
        dj = json.loads((self.pre / "dataset.json").read_text())
        out = self.pre / cm.data_identifier
        out.mkdir(parents=True, exist_ok=True)
        with nnunet_env(self.work, self.log):
            pre = cm.preprocessor_class(verbose=False)
            for j in cases:
                for f in [*out.glob(f"{self.case(j)}.*"), *out.glob(f"{self.case(j)}_seg.*")]:
                    f.unlink()  # blosc2 does not overwrite
                files = sorted(str(p) for p in (self.raw / "imagesTr").glob(f"{self.case(j)}_*.nii.gz"))
                pre.run_case_save(str(out / self.case(j)), files, str(self.raw / "labelsTr" / f"{self.case(j)}.nii.gz"),
                                  plans, cm, dj)

    # -- training ------------------------------------------------------------------------------
    def fit(self, labels: dict[int, np.ndarray], folds: list[list[int]], key: tuple) -> NnUNetEnsemble:
        """Train one nnU-Net per fold on the partially annotated images ``labels`` (train+pool index →
        label map with ``ignore``); fold f validates on ``folds[f]`` and trains on the rest."""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
            nnUNetTrainerNoMirroring)
        self._ensure_planned()
        changed = []
        for j in range(len(self.train_cases)):
            lab = labels.get(j)
            if lab is None:
                lab = np.full(self.data.shapes[self.train_cases[j]], self.ignore, dtype=np.uint8)
            if self._write_label(j, lab) or not any(self.pre.glob(f"*/{self.case(j)}.pkl")):
                changed.append(j)
        self._preprocess(changed)
        images = sorted(labels)
        splits = []
        for f in folds:
            val = [self.case(j) for j in f]
            tr = [self.case(j) for j in images if j not in set(f)] or [self.case(j) for j in images]
            splits.append({"train": tr, "val": val or tr})
        (self.pre / "splits_final.json").write_text(json.dumps(splits, indent=1))
        # one results folder per training; earlier ones are removed (a resumed run retrains its loop)
        results = self.work / "results" / ("train_" + "_".join(str(int(k)) for k in key))
        for old in (self.work / "results").glob("train_*"):
            shutil.rmtree(old, ignore_errors=True)
        epochs, per_epoch = schedule(self.iterations)
        cls = nnUNetTrainer if self.mirror else nnUNetTrainerNoMirroring
        plans = json.loads((self.pre / f"{PLANS}.json").read_text())
        dj = json.loads((self.pre / "dataset.json").read_text())
        folder = results / self.name / f"{self.trainer_name}__{PLANS}__{CONFIG}"
        for f in range(len(splits)):
            _seed_all((*key, f))
            with nnunet_env(self.work, self.log, results):
                tr = cls(plans={**plans, "continue_training": False}, configuration=CONFIG, fold=f, dataset_json=dj,
                         device=torch.device(self.device))
                tr.num_epochs, tr.num_iterations_per_epoch = epochs, per_epoch
                tr.num_val_iterations_per_epoch = 50 if per_epoch == 250 else 1
                tr.save_every = 10 ** 9
                tr.run_training()
            self.progress(epochs * per_epoch)
        return NnUNetEnsemble(self, folds, list(range(len(splits))), folder)
