"""The bad-input table: every malformed input of every CLI is one ``error:`` line, exit 2, no
traceback, and nothing written under the output folder.

Each case builds its input under ``tmp_path`` (never under the output folder ``tmp_path/out``), runs
the CLI's ``main`` through ``experiments.common.main_guard`` (the command-line path) and checks the
four promises.  Cases that need a read-only folder use ``chmod`` as a normal user and, as root (who
ignores permissions), a read-only tmpfs in a private mount namespace (``unshare``), else skip.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from experiments.common import main_guard

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0


def _main(cli):
    import importlib
    return importlib.import_module(f"experiments.{cli}").main


# ------------------------------------------------------------------------------- input builders

def _idx(data: np.ndarray) -> bytes:
    return struct.pack(">I", 0x0800 | data.ndim) + b"".join(struct.pack(">I", d) for d in data.shape) + data.tobytes()


def fmnist(tmp: Path, mutate: str | None = None) -> Path:
    """A tiny Fashion-MNIST folder (*-ubyte.gz), optionally broken in one way."""
    d = tmp / "fmnist"
    d.mkdir()
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 120), ("t10k", 40)):
        files[f"{split}-images-idx3-ubyte"] = _idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        files[f"{split}-labels-idx1-ubyte"] = _idx((np.arange(n) % 10).astype(np.uint8))
    if mutate == "count":
        files["t10k-labels-idx1-ubyte"] = _idx((np.arange(39) % 10).astype(np.uint8))
    if mutate == "labels":
        files["train-labels-idx1-ubyte"] = _idx(np.r_[np.arange(119) % 10, 12].astype(np.uint8))
    if mutate == "magic":
        files["train-labels-idx1-ubyte"] = b"\x00\x00\x09\x01" + files["train-labels-idx1-ubyte"][4:]
    for name, raw in files.items():
        if mutate == "missing" and name == "t10k-labels-idx1-ubyte":
            continue
        if mutate == "short" and name == "train-images-idx3-ubyte":
            (d / name).write_bytes(raw[: len(raw) // 2])        # uncompressed, cut
            continue
        gz = gzip.compress(raw)
        if mutate == "truncated" and name == "train-images-idx3-ubyte":
            gz = gz[: len(gz) // 2]
        if mutate == "garbage" and name == "train-images-idx3-ubyte":
            gz = b"this is not gzip" * 10
        (d / (name + ".gz")).write_bytes(gz)
    if mutate == "unreadable":
        (d / "train-images-idx3-ubyte.gz").chmod(0)
    return d


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w`` x ``h`` (no pixel data): enough for Pillow's size check."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def folder(tmp: Path, classes=("a", "b"), per_class=60, mutate: str | None = None) -> Path:
    from PIL import Image
    d = tmp / "images"
    rng = np.random.default_rng(1)
    for c in classes:
        (d / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(d / c / f"{i:03d}.png")
    if mutate == "bomb":
        (d / classes[0] / "000.png").write_bytes(_png_header(15000, 15000))
    if mutate == "garbage":
        (d / classes[0] / "000.png").write_bytes(b"not an image at all")
    if mutate == "empty_class":
        (d / "zzz_empty").mkdir()
    return d


def msd_seg(tmp: Path, mutate: str) -> Path:
    """A tiny MSD folder for the segmentation CLI with one broken case."""
    import nibabel as nib
    d = tmp / "Task01_Tiny"
    (d / "imagesTr").mkdir(parents=True)
    (d / "labelsTr").mkdir()
    rng = np.random.default_rng(2)
    training = []
    for i in range(6):
        shape = (0, 16, 8) if (mutate == "zero_axis" and i == 2) else (16, 16, 8)
        img = rng.normal(size=shape).astype(np.float32)
        lab = (rng.random(shape) > 0.7).astype(np.uint8)
        if mutate == "nan" and i == 4:
            img[3, 3, 3] = np.nan
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(d / "imagesTr" / f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(d / "labelsTr" / f"c{i}.nii.gz"))
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (d / "dataset.json").write_text(json.dumps({"name": "Tiny", "labels": {"0": "background", "1": "fg"},
                                                "modality": {"0": "MRI"}, "training": training}))
    return d


def msd_values(tmp: Path, mutate: str) -> Path:
    """A tiny nnU-Net-layout folder for the values testbed, broken in one way."""
    import nibabel as nib
    from uncertainty.data import ToyConfig, make_toy, write_msd
    d = write_msd(make_toy(ToyConfig(dim=2, size=16, n_train=4, n_val=2, n_test_iid=1, n_test_ood=3, n_pool_iid=1,
                                     n_pool_ood=2)), tmp / "DatasetV")
    meta = json.loads((d / "dataset.json").read_text())
    first = sorted((d / "imagesTr").iterdir())[0]
    if mutate == "list":
        (d / "dataset.json").write_text(json.dumps([meta]))
    elif mutate == "values_string":
        (d / "dataset.json").write_text(json.dumps({**meta, "values": "ood"}))
    elif mutate == "training_string":
        (d / "dataset.json").write_text(json.dumps({**meta, "training": ["imagesTr/a.nii.gz"]}))
    elif mutate == "zero_axis":
        nib.save(nib.Nifti1Image(np.zeros((16, 0), np.float32), np.eye(4)), str(first))
    elif mutate == "nan":
        img = np.asarray(nib.load(str(first)).dataobj).astype(np.float32)
        img[2, 2] = np.inf
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(first))
    return d


@pytest.fixture(scope="module")
def values_run(tmp_path_factory):
    """A finished values run to damage (one per case, copied)."""
    out = tmp_path_factory.mktemp("values_ref") / "out"
    with pytest.raises(SystemExit) as e:
        main_guard(_main("values"), ["--dataset", "toy2d", "--preset", "smoke", "--seeds", "1", "--workers", "1",
                                     "--models", "softmax", "--tasks", "separation", "--no-plots", "--out", str(out),
                                     "--quiet"])
    assert e.value.code == 0
    return out


VALUES_RESUME = ["--dataset", "toy2d", "--preset", "smoke", "--seeds", "1", "--workers", "1", "--models", "softmax",
                 "--tasks", "separation", "--no-plots", "--resume"]


def damaged(kind: str):
    def build(tmp: Path, ref: Path) -> None:
        shutil.copytree(ref, tmp / "out")
        run = tmp / "out" / "toy2d_smoke"
        if kind == "records_type":
            state = json.loads((run / "state.json").read_text())
            (run / "state.json").write_text(json.dumps({**state, "records": {"cycle": 0}}))
        elif kind == "state_garbage":
            (run / "state.json").write_text("{\"records\": [")
        elif kind == "config_garbage":
            (run / "config.json").write_bytes(b"\x00\xff garbage")
        elif kind == "npz_truncated":
            p = run / "seed0" / "eval_softmax" / "eval.npz"
            p.write_bytes(p.read_bytes()[:100])
        elif kind == "pt_garbage":  # a damaged checkpoint the resume needs (its evaluation is not done yet)
            (run / "seed0" / "net_det0" / "net.pt").write_bytes(b"garbage" * 50)
            shutil.rmtree(run / "seed0" / "eval_softmax")
        elif kind == "csv_garbage":
            (run / "seed0" / "eval_softmax" / "eval.csv").write_text("nonsense\n1,2,3\n")
    return build


# ------------------------------------------------------------------------------- the table
# (id, cli, args(tmp) → argv without --out, needle in the message, options)
OUT = "{out}"
C = ["--preset", "smoke", "--seeds", "1", "--method", "random", "--quiet"]
S = ["--preset", "smoke", "--method", "random", "--quiet", "--no-full-data"]
V = ["--preset", "smoke", "--seeds", "1", "--workers", "1", "--models", "softmax", "--no-plots", "--quiet"]

CASES = [
    # numbers
    ("c-seed-offset-negative", "cifar10", lambda t: [*C, "--seed-offset", "-1"], "must be an integer >= 0", {}),
    ("c-seed-offset-2**32", "cifar10", lambda t: [*C, "--seed-offset", str(2 ** 32)], "must be <= 4294967295", {}),
    ("c-last-seed-2**32", "cifar10", lambda t: [*C, "--seed-offset", str(2 ** 32 - 1), "--seeds", "2"], "2**32", {}),
    ("c-seeds-0", "cifar10", lambda t: [*C, "--seeds", "0"], "must be an integer >= 1", {}),
    ("c-seeds-text", "cifar10", lambda t: [*C, "--seeds", "two"], "must be an integer", {}),
    ("c-image-size-0", "cifar10", lambda t: [*C, "--image-size", "0"], "--image-size", {}),
    ("s-seed-offset-negative", "segmentation", lambda t: [*S, "--seed-offset", "-1"], "must be an integer >= 0", {}),
    ("s-threads-negative", "segmentation", lambda t: [*S, "--threads", "-1"], "--threads", {}),
    ("s-threads-0", "segmentation", lambda t: [*S, "--threads", "0"], "--threads", {}),
    ("s-query-size-0", "segmentation", lambda t: [*S, "--query-size", "0"], "--query-size", {}),
    ("s-patch-size-0", "segmentation", lambda t: [*S, "--patch-size", "0", "4", "4"], "--patch-size", {}),
    ("s-split-seed-negative", "segmentation", lambda t: [*S, "--split-seed", "-5"], "--split-seed", {}),
    ("s-overlap-nan", "segmentation", lambda t: [*S, "--overlap", "nan"], "finite", {}),
    ("v-seed-offset-negative", "values", lambda t: ["--dataset", "toy2d", *V, "--seed-offset", "-1"], "must be an integer >= 0", {}),
    ("v-threads-negative", "values", lambda t: ["--dataset", "toy2d", *V, "--threads", "-1"], "--threads", {}),
    ("v-threads-0", "values", lambda t: ["--dataset", "toy2d", *V, "--threads", "0"], "--threads", {}),
    ("v-epochs-0", "values", lambda t: ["--dataset", "toy2d", *V, "--epochs", "0"], "--epochs", {}),
    ("p-size-4096-cannot-be-allocated", "make_phantoms", lambda t: ["--size", "4096", "--quiet"], "memory", {}),
    ("p-n-2", "make_phantoms", lambda t: ["--n", "2", "--quiet"], "--n", {}),
    ("p-seed-negative", "make_phantoms", lambda t: ["--seed", "-1", "--quiet"], "--seed", {}),
    ("p-spacing-0", "make_phantoms", lambda t: ["--spacing", "0", "1", "1", "--quiet"], "--spacing", {}),
    # --out and other paths
    ("c-out-is-a-file", "cifar10", lambda t: C, "is a file", {"out": "file"}),
    ("s-out-is-a-file", "segmentation", lambda t: S, "is a file", {"out": "file"}),
    ("v-out-is-a-file", "values", lambda t: ["--dataset", "toy2d", *V], "is a file", {"out": "file"}),
    ("p-out-is-a-file", "make_phantoms", lambda t: ["--quiet"], "is a file", {"out": "file"}),
    ("r-out-is-a-file", "report", lambda t: [str(t)], "is a file", {"out": "file"}),
    ("c-out-not-creatable", "cifar10", lambda t: C, "cannot be created", {"out": "under_file"}),
    ("c-out-read-only", "cifar10", lambda t: C, "not writable", {"out": "read_only"}),
    ("s-out-read-only", "segmentation", lambda t: S, "not writable", {"out": "read_only"}),
    ("v-out-read-only", "values", lambda t: ["--dataset", "toy2d", *V], "not writable", {"out": "read_only"}),
    ("p-out-read-only", "make_phantoms", lambda t: ["--quiet"], "not writable", {"out": "read_only"}),
    ("r-out-read-only", "report", lambda t: [str(t)], "not writable", {"out": "read_only"}),
    ("c-cache-dir-is-a-file", "cifar10", lambda t: [*C, "--cache-dir", str(_file(t))], "is a file", {}),
    ("c-data-dir-missing", "cifar10", lambda t: [*C, "--data-dir", str(t / "nope")], "does not exist", {}),
    ("c-data-dir-is-a-file", "cifar10", lambda t: [*C, "--data-dir", str(_file(t))], "is a file", {}),
    ("s-data-dir-is-a-file", "segmentation", lambda t: [*S, "--data-dir", str(_file(t))], "is a file", {}),
    ("s-dataset-missing", "segmentation", lambda t: [*S, "--dataset", str(t / "nope")], "does not exist", {}),
    ("v-dataset-missing", "values", lambda t: ["--dataset", str(t / "nope"), *V], "no such path", {}),
    ("r-path-missing", "report", lambda t: [str(t / "nope")], "does not exist", {}),
    ("r-no-runs", "report", lambda t: [str(_dir(t))], "no realistic-al run directories", {}),
    # Fashion-MNIST (IDX) files
    ("c-fmnist-file-missing", "cifar10", lambda t: [*C, "--data-dir", str(fmnist(t, "missing"))], "lacks t10k-labels", {}),
    ("c-fmnist-truncated-gz", "cifar10", lambda t: [*C, "--data-dir", str(fmnist(t, "truncated"))], "train-images", {}),
    ("c-fmnist-garbage-gz", "cifar10", lambda t: [*C, "--data-dir", str(fmnist(t, "garbage"))], "train-images", {}),
    ("c-fmnist-short-file", "cifar10", lambda t: [*C, "--data-dir", str(fmnist(t, "short"))], "truncated", {}),
    ("c-fmnist-count-mismatch", "cifar10", lambda t: [*C, "--data-dir", str(fmnist(t, "count"))], "40 images but", {}),
    ("c-fmnist-label-out-of-range", "cifar10", lambda t: [*C, "--data-dir", str(fmnist(t, "labels"))], "0..9", {}),
    ("c-fmnist-bad-magic", "cifar10", lambda t: [*C, "--data-dir", str(fmnist(t, "magic"))], "not an IDX", {}),
    ("c-fmnist-unreadable", "cifar10", lambda t: [*C, "--data-dir", str(fmnist(t, "unreadable"))], "permission denied",
     {"needs_non_root": True}),
    ("c-cifar-download-offline", "cifar10", lambda t: [*C, "--dataset", "cifar10", "--data-dir", str(_dir(t)),
                                                       "--download"], "download failed", {"offline": True}),
    # image folders
    ("c-folder-missing", "cifar10", lambda t: [*C, "--dataset", f"folder:{t / 'nope'}"], "does not exist", {}),
    ("c-folder-decompression-bomb", "cifar10", lambda t: [*C, "--dataset", f"folder:{folder(t, mutate='bomb')}"],
     "too large to decode safely", {}),
    ("c-folder-garbage-image", "cifar10", lambda t: [*C, "--dataset", f"folder:{folder(t, mutate='garbage')}"],
     "cannot read image", {}),
    ("c-folder-too-small", "cifar10", lambda t: [*C, "--dataset", f"folder:{folder(t, per_class=6)}"],
     "the train split holds", {}),
    ("c-folder-single-class", "cifar10", lambda t: [*C, "--dataset", f"folder:{folder(t, classes=('a',))}"],
     "single class", {}),
    ("c-folder-empty-class", "cifar10", lambda t: [*C, "--dataset", f"folder:{folder(t, mutate='empty_class')}"],
     "holds no images", {}),
    # NIfTI / MSD
    ("s-volume-zero-length-axis", "segmentation", lambda t: [*S, "--dataset", str(msd_seg(t, "zero_axis"))],
     "zero-length axis", {}),
    ("s-volume-nan", "segmentation", lambda t: [*S, "--dataset", str(msd_seg(t, "nan"))], "NaN", {}),
    ("v-dataset-json-list", "values", lambda t: ["--dataset", str(msd_values(t, "list")), *V], "JSON object", {}),
    ("v-dataset-json-values-string", "values", lambda t: ["--dataset", str(msd_values(t, "values_string")), *V],
     "\"values\" must be an object", {}),
    ("v-dataset-json-training-string", "values", lambda t: ["--dataset", str(msd_values(t, "training_string")), *V],
     "training entry 0", {}),
    ("v-volume-zero-length-axis", "values", lambda t: ["--dataset", str(msd_values(t, "zero_axis")), *V],
     "zero-length axis", {}),
    ("v-volume-inf", "values", lambda t: ["--dataset", str(msd_values(t, "nan")), *V], "NaN/Inf", {}),
    # damaged run directories (resume)
    ("v-resume-records-wrong-type", "values", lambda t: VALUES_RESUME, "records is a dict", {"damage": "records_type"}),
    ("v-resume-state-truncated", "values", lambda t: VALUES_RESUME, "not valid JSON", {"damage": "state_garbage"}),
    ("v-resume-config-garbage", "values", lambda t: VALUES_RESUME, "not valid JSON", {"damage": "config_garbage"}),
    ("v-resume-npz-truncated", "values", lambda t: VALUES_RESUME, "eval_softmax/eval.npz", {"damage": "npz_truncated"}),
    ("v-resume-csv-garbage", "values", lambda t: VALUES_RESUME, "eval_softmax/eval.csv", {"damage": "csv_garbage"}),
]


def _file(t: Path) -> Path:
    p = t / "a_file"
    p.write_text("x")
    return p


def _dir(t: Path) -> Path:
    p = t / "a_dir"
    p.mkdir(exist_ok=True)
    return p


def _snapshot(root: Path) -> dict:
    """Every file under ``root`` with size and mtime — except the study layer's own bookkeeping
    (``.study/``: the plan it records at every start), which is not the run's data."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": (root.stat().st_size, root.stat().st_mtime_ns)}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if ".study" not in p.relative_to(root).parts}


def _unshare_ok() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _run_read_only(cli: str, argv: list, out: Path) -> tuple[int, str]:
    """The CLI with ``out`` on a genuinely read-only file system (root ignores chmod)."""
    if not IS_ROOT:
        out.mkdir()
        out.chmod(0o555)
        try:
            return _run_inprocess(cli, argv)
        finally:
            out.chmod(0o755)
    if not _unshare_ok():
        pytest.skip("running as root and no unshare: cannot make a read-only folder")
    out.mkdir()
    cmd = (f"mount -t tmpfs -o ro,size=1m none {out} && exec {sys.executable} -m experiments.{cli} "
           + " ".join(f"'{a}'" for a in argv))
    env = {**os.environ, "REALISTIC_AL_QUIET": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    return r.returncode, r.stderr


def _run_inprocess(cli: str, argv: list) -> tuple[int, str]:
    import io
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main_guard(_main(cli), argv)
            code = 0
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(case, tmp_path, monkeypatch, request):
    name, cli, args, needle, opt = case
    if opt.get("needs_non_root") and IS_ROOT:
        pytest.skip("root reads files whatever their permissions")
    out = tmp_path / "out"
    if opt.get("out") == "file":
        out.write_text("a file")
    elif opt.get("out") == "under_file":
        _file(tmp_path)
        out = tmp_path / "a_file" / "sub"
    if "damage" in opt:
        damaged(opt["damage"])(tmp_path, request.getfixturevalue("values_run"))
    if opt.get("offline"):
        import urllib.error
        import urllib.request

        def no_network(*a, **k):
            raise urllib.error.URLError("network is unreachable (test)")
        monkeypatch.setattr(urllib.request, "urlopen", no_network)
    argv = [*args(tmp_path), "--out", str(out)]
    before = _snapshot(out)
    if opt.get("out") == "read_only":
        code, err = _run_read_only(cli, argv, out)
        before = {}
    else:
        code, err = _run_inprocess(cli, argv)
    lines = err.strip("\n").split("\n")
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert needle in err, err
    assert _snapshot(out) == before, "something was written under --out"


def test_table_size():
    """The closing note counts the cases."""
    assert len(CASES) >= 60


def test_damaged_checkpoint_inside_a_study_job_names_file_and_recovery(tmp_path, values_run):
    """A damaged net the resume needs is found inside a study job: the study lists the failed job with
    the file and how to recover (its own failure format), never a traceback; the run's files stay."""
    damaged("pt_garbage")(tmp_path, values_run)
    out = tmp_path / "out"
    before = _snapshot(out / "toy2d_smoke")
    code, err = _run_inprocess("values", [*VALUES_RESUME, "--out", str(out)])
    assert code != 0 and "Traceback" not in err, err
    assert "net_det0/net.pt" in err and "delete it and rerun with --resume" in err, err
    assert err.strip().splitlines()[-1].startswith("error: ")
    after = _snapshot(out / "toy2d_smoke")
    changed = [k for k in after if before.get(k) != after[k] and ".job" not in k
               and (out / "toy2d_smoke" / k).is_file()]   # the job's bookkeeping aside, no result file touched
    assert not changed, changed
