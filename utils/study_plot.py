#!/usr/bin/env python3
"""The picture of a `dsonas study`: STUDY_DIR/study.png from STUDY_DIR/study.json.

Left: test accuracy per group (found, hand-made, random), every retrain shown as a
dot (random architectures in their own colours), the group mean with its 95 %
interval (Student's t).  Right: test accuracy against MACs, every retrain.

usage: /usr/bin/python3 utils/study_plot.py STUDY_DIR   (Debian's python3-matplotlib)
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GROUPS = [("found", "found (DSO-NAS)"), ("baseline", "hand-made"), ("random", "random, same cost")]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: study_plot.py STUDY_DIR")
    d = sys.argv[1]
    with open(d + "/study.json") as f:
        s = json.load(f)
    done = [r for r in s["results"] if r["done"]]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
    archs = sorted({r["arch"] for r in done if r["group"] == "random"})
    cmap = plt.get_cmap("tab10")
    colour = {a: cmap(3 + i % 7) for i, a in enumerate(archs)}
    colour["baseline"] = "tab:orange"
    for i, (g, label) in enumerate(GROUPS):
        rs = [r for r in done if r["group"] == g]
        st = s["groups"][g]
        for k, r in enumerate(rs):
            x = i + (k - (len(rs) - 1) / 2) * 0.05
            c = colour.get(r["arch"], "tab:blue")
            ax.plot(x, r["top1"], "o", color=c, alpha=0.8, ms=5)
            bx.plot(r["macs"] / 1e6, r["top1"], "o", color=c, alpha=0.8, ms=5,
                    label=label if k == 0 else None)
        if st["n"] >= 1:
            lo, hi = st["ci95"]
            ax.errorbar(i + 0.28, st["mean"], yerr=[[st["mean"] - lo], [hi - st["mean"]]], fmt="s", color="black",
                        capsize=4, ms=6)
    ax.set_xticks(range(len(GROUPS)))
    ax.set_xticklabels(["%s\n(n=%d)" % (lab, s["groups"][g]["n"]) for g, lab in GROUPS])
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("every retrain; mean and 95 % interval")
    ax.set_xlim(-0.5, len(GROUPS) - 0.3)
    t = s["tests"]["found_vs_random"]
    if t["valid"]:
        ax.text(0.02, 0.02, "found − random: %+.2f, p = %.3g" % (t["diff"], t["p"]), transform=ax.transAxes,
                fontsize=8)
    bx.set_xlabel("MACs (M)")
    bx.set_ylabel("test top-1 accuracy (%)")
    bx.set_title("accuracy against MACs")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(d + "/study.png", dpi=110)


if __name__ == "__main__":
    main()
