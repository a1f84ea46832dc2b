#!/usr/bin/python3
"""Checks of the 6-seed study's report with SciPy, from the retrains' evaluations in eval/.

usage: /usr/bin/python3 analysis.py [FOLDER]   (FOLDER: this one by default)
Prints per group and per architecture the mean and sd, Welch's test of found vs random
(pooled) and found vs hand-made, the pooled within-architecture sd, a one-way ANOVA among
the random architectures, and the architecture-level test (found's mean against the random
architectures' means as the units, Welch-Satterthwaite degrees of freedom)."""
import json, os, sys
import numpy as np
from scipy import stats

D = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
per = {}
for f in sorted(os.listdir(D + "/eval")):
    arch, seed = f[:-5].rsplit("_s", 1)
    per.setdefault(arch, []).append(100 * json.load(open(f"{D}/eval/{f}"))["top1"])
rand = [v for k, v in per.items() if k.startswith("random")]
groups = {"found": per["found"], "baseline": per["baseline"], "random": sum(rand, [])}
for k, v in groups.items():
    print(f"{k:9s} n={len(v):2d} mean {np.mean(v):.3f} sd {np.std(v, ddof=1):.3f}")
for k, v in per.items():
    print(f"  {k:11s} mean {np.mean(v):.3f}  {', '.join('%.2f' % x for x in v)}")
for other in ("random", "baseline"):
    a, b = groups["found"], groups[other]
    t = stats.ttest_ind(a, b, equal_var=False)
    print(f"found vs {other}: {np.mean(a) - np.mean(b):+.3f} points, Welch t {t.statistic:.3f}, p {t.pvalue:.4f}")
ss = sum(((np.array(v) - np.mean(v)) ** 2).sum() for v in per.values())
dof = sum(len(v) - 1 for v in per.values())
print(f"pooled within-architecture sd {np.sqrt(ss / dof):.3f} ({dof} df)")
print("random architectures differ among themselves? one-way ANOVA p = %.3f" % stats.f_oneway(*rand).pvalue)
f, rm = per["found"], [np.mean(v) for v in rand]
vf, vr = np.var(f, ddof=1) / len(f), np.var(rm, ddof=1) / len(rm)
df = (vf + vr) ** 2 / (vf ** 2 / (len(f) - 1) + vr ** 2 / (len(rm) - 1))
t = (np.mean(f) - np.mean(rm)) / np.sqrt(vf + vr)
print(f"architecture level: found {np.mean(f):.3f} vs random architectures' means {np.mean(rm):.3f}: "
      f"t {t:.2f}, df {df:.1f}, p {2 * stats.t.sf(abs(t), df):.4f}")
