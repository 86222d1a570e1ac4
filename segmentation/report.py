"""Pictures of queried patches (like thesis figs. D.10–D.13): for each method, the centre slice
(along the last axis) of patches queried after the first AL loop, drawn over the image with the
ground truth as a translucent overlay; earlier (starting-budget) patches crossing the slice are
dashed grey."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from core.report import pyplot, save_figure

from .patches import PatchPool


def plot_queries(data, pool: PatchPool, per_method: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path,
                 class_names: Sequence[str], max_panels: int = 6, title: str = "") -> None:
    """``per_method``: (label, ids queried in the first AL query, ids of the starting budget).
    Panels: the patches of the first query from the images that received most of them."""
    plt = pyplot()
    from matplotlib import colors, patches as mpatches

    rows = max(len(per_method), 1)
    fig, axes = plt.subplots(rows, max_panels, figsize=(2.3 * max_panels, 2.7 * rows + 0.8), squeeze=False)
    cmap = plt.get_cmap("tab10")
    lab_cmap = colors.ListedColormap([(0, 0, 0, 0)] + [(*cmap(i)[:3], 0.4) for i in range(len(class_names) - 1)])
    for r, (label, ids, start_ids) in enumerate(per_method):
        img_idx, origins = pool.decode(ids)
        s_img, s_org = pool.decode(start_ids)
        order = np.argsort(-np.bincount(img_idx, minlength=pool.n_images)[img_idx], kind="stable")
        shown, seen = 0, set()
        for q in order:
            if shown >= max_panels:
                break
            j, o = int(img_idx[q]), origins[q]
            k = pool.kernels[j]
            z = int(o[2] + k[2] // 2)
            if (j, z) in seen:
                continue
            seen.add((j, z))
            case = int(data.train[j])
            image = data.image(case)[0][:, :, z]
            gt = np.asarray(data.label(case))[:, :, z]
            ax = axes[r, shown]
            ax.imshow(image.T, cmap="gray", origin="lower", interpolation="nearest")
            ax.imshow(gt.T, cmap=lab_cmap, vmin=0, vmax=len(class_names) - 1, origin="lower", interpolation="nearest")
            for jj, oo in zip(s_img, s_org):   # earlier patches crossing this slice
                if jj == j and oo[2] <= z < oo[2] + k[2]:
                    ax.add_patch(mpatches.Rectangle((oo[0] - 0.5, oo[1] - 0.5), k[0], k[1], fill=False, ec="0.7", ls="--", lw=0.8))
            for jj, oo in zip(img_idx, origins):  # this query's patches crossing it
                if jj == j and oo[2] <= z < oo[2] + k[2]:
                    ax.add_patch(mpatches.Rectangle((oo[0] - 0.5, oo[1] - 0.5), k[0], k[1], fill=False, ec="yellow", lw=1.2))
            ax.add_patch(mpatches.Rectangle((o[0] - 0.5, o[1] - 0.5), k[0], k[1], fill=False, ec="red", lw=1.6))
            ax.set_title(f"{data.cases[case]} z={z}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            shown += 1
        for c in range(shown, max_panels):
            axes[r, c].axis("off")
        axes[r, 0].set_ylabel(label, fontsize=9)
        if shown:
            axes[r, 0].set_yticks([])
    handles = [mpatches.Patch(color=cmap(i), alpha=0.6, label=n) for i, n in enumerate(class_names[1:])]
    handles += [mpatches.Patch(fill=False, ec="red", label="patch (centre slice)"),
                mpatches.Patch(fill=False, ec="yellow", label="same query"),
                mpatches.Patch(fill=False, ec="0.7", ls="--", label="starting budget")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(title or "queried patches after the first AL loop (centre slices)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    save_figure(fig, path, dpi=110, tight=False)
