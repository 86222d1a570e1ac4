"""Write seeded multi-class 3D phantoms in the Medical Segmentation Decathlon layout.

    python -m experiments.make_phantoms --out data/phantoms [--n 24] [--size 48] [--seed 0]

The folder (dataset.json, imagesTr/, labelsTr/ with NIfTI volumes; labels 0 background,
1 organ, 2 vessel, 3 lesion) can be passed to ``python -m experiments.segmentation --dataset DIR``
like any downloaded MSD / nnU-Net raw dataset.  Same parameters → same files; an existing folder
written with the same parameters is left as it is, anything else there is refused.
"""
from __future__ import annotations

from typing import Sequence

from experiments.common import Parser, Progress, float_arg, int_arg, main_guard, out_arg, seed_arg


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m experiments.make_phantoms", description=__doc__.split("\n")[0],
               epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--out", type=out_arg, required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--n", type=int_arg(4, 100_000), default=24, help="number of cases (default 24, at least 4)")
    p.add_argument("--size", type=int_arg(16, 4096), default=48, help="edge length in voxels (default 48, at least 16)")
    p.add_argument("--seed", type=seed_arg, default=0, help="generator seed (default 0)")
    p.add_argument("--spacing", type=float_arg(positive=True), nargs=3, default=(1.0, 1.0, 1.0), metavar=("X", "Y", "Z"),
                   help="voxel spacing written to the NIfTI headers in mm (default 1 1 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    from segmentation.phantoms import write_phantoms
    with Progress(a.quiet) as pr:
        task = pr.task("writing phantoms", a.n)
        out = write_phantoms(a.out, n=a.n, size=a.size, seed=a.seed, spacing=tuple(a.spacing),
                             progress=lambda i, n: pr.advance(task))
    print(f"{out}: {a.n} phantoms of {a.size}³ (seed {a.seed}) in MSD layout")
    return 0


if __name__ == "__main__":
    main_guard(main)
