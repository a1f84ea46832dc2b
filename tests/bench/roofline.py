"""roofline.py — the parts of `make bench` that read dsonas's steps against the machine
(issue 17): a roofline table per primitive family, and retrain steps against a PyTorch
model of the same network.

Roofline.  `dsonas bench ... --bench.profile true` reports, per primitive call kind, its time
and its work model (src/backend/profiling_backend.cpp: FLOPs = 2 × multiply-adds; bytes =
every tensor the call must read and write, once).  Here the kinds are summed into families
(1×1 GEMM, depthwise 3×3 / 5×5, pooling, BN + ReLU, λ-weighted sums, concatenation, head,
optimiser, …) and each family's achieved GFLOP/s and GB/s are set against the machine's
roof at its arithmetic intensity I = FLOPs / bytes:
    roof(I) = min(peak FMA GFLOP/s, I × triad GB/s)
    L3 roof(I) = min(peak, I × L3 triad GB/s)      (where machine_limits measured the L3)
(machine_limits.cpp: all threads, best of 5), and % of roof = achieved / roof(I).  The
bound is "compute" when I × bandwidth exceeds the peak, else "memory".

Retrain.  `dsonas bench --arch A` times retrain steps (forward, backward, NAG) of a derived
network; `RetrainTwin` builds the same network in PyTorch from the architecture JSON that
dsonas timed (utils/export_net.py's build_module: the same ops, BN, shortcut, head) and
times its training step (cross-entropy, backward, SGD with Nesterov momentum and weight
decay), torch.set_num_threads(threads), the same batch.
"""
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "utils"))
import export_net  # noqa: E402

FAMILIES = [
    ("1×1 conv (GEMM)", lambda p: p.startswith("conv_") and " 1x1 " in p),
    ("depthwise 3×3", lambda p: p.startswith("conv_") and " dw3x3" in p),
    ("depthwise 5×5", lambda p: p.startswith("conv_") and " dw5x5" in p),
    ("stem / reduction conv", lambda p: p.startswith("conv_")),
    ("pooling 3×3", lambda p: p.startswith("pool_")),
    ("BN + ReLU", lambda p: p.startswith("bn_")),
    ("λ-weighted sums", lambda p: p.startswith("wsum_") or p == "dot_accumulate"),
    ("concatenation", lambda p: p.startswith("concat_scaled_columns")),
    ("head (pool, FC, loss)", lambda p: p.startswith(("global_avg_pool", "linear_", "softmax_xent"))),
    ("optimiser and checks", lambda p: p in ("nag_update", "clip", "all_finite", "sum_squares")),
    ("elementwise (add, scale, dropout, fill, copy)",
     lambda p: p in ("add", "axpy", "scale_samples", "dropout_apply", "fill", "copy")),
    ("layout and host transfers", lambda p: p in ("act_from_nchw", "act_to_nchw", "upload", "download")),
]


def family_of(primitive):
    for name, match in FAMILIES:
        if match(primitive):
            return name
    return "other"


def roofline(profile, limits):
    """Rows per family (largest time first) from a dsonas bench profile and machine limits."""
    peak = limits["fma_gflops_node"]["best"]
    bw = limits["triad_gbs_node"]["best"]
    # the L3's triad (machine_limits, where sysfs names the cache): the roof of a family
    # whose tensors stay in the L3 between the op that writes them and the one that reads
    bw3 = (limits.get("triad_l3_gbs_node") or {}).get("best")
    fam = {}
    for r in profile:
        f = fam.setdefault(family_of(r["primitive"]), {"ms": 0.0, "flop": 0.0, "bytes": 0.0, "calls": 0.0})
        f["ms"] += r["ms_per_step"]
        f["flop"] += r["flop_per_step"]
        f["bytes"] += r["bytes_per_step"]
        f["calls"] += r["calls_per_step"]
    total = sum(f["ms"] for f in fam.values())
    rows = []
    for name, f in sorted(fam.items(), key=lambda kv: -kv[1]["ms"]):
        sec = f["ms"] / 1e3
        gflops = f["flop"] / sec / 1e9 if sec > 0 else 0.0
        gbs = f["bytes"] / sec / 1e9 if sec > 0 else 0.0
        ai = f["flop"] / f["bytes"] if f["bytes"] > 0 else 0.0
        roof = min(peak, ai * bw) if ai > 0 else bw  # no FLOPs: the bandwidth roof (GB/s)
        pct = (gflops / roof if ai > 0 else gbs / bw) if roof > 0 else 0.0
        pct3 = None
        if bw3:
            roof3 = min(peak, ai * bw3) if ai > 0 else bw3
            pct3 = (gflops / roof3 if ai > 0 else gbs / bw3) if roof3 > 0 else 0.0
        rows.append({"pct_of_l3_roof": pct3, "family": name, "ms_per_step": f["ms"], "share": f["ms"] / total if total else 0.0,
                     "calls_per_step": f["calls"], "gflop_per_step": f["flop"] / 1e9,
                     "mbytes_per_step": f["bytes"] / 1e6, "gflops": gflops, "gbs": gbs, "flop_per_byte": ai,
                     "bound": "compute" if ai * bw >= peak else "memory", "roof_gflops": roof if ai > 0 else None,
                     "pct_of_roof": pct})
    return {"peak_gflops": peak, "triad_gbs": bw, "triad_l3_gbs": bw3, "total_ms_per_step": total, "families": rows}


def print_roofline(title, rl):
    l3 = rl.get("triad_l3_gbs")
    print(f"\n{title}: roofline per primitive family (peak {rl['peak_gflops']:.0f} GFLOP/s, "
          f"triad {rl['triad_gbs']:.1f} GB/s" + (f", L3 triad {l3:.1f} GB/s" if l3 else "") +
          f"; {rl['total_ms_per_step']:.1f} ms per step in primitives)")
    print(f"{'family':<46}{'ms/step':>9}{'share':>7}{'GFLOP/s':>9}{'GB/s':>7}{'F/B':>7}  {'bound':<8}{'% roof':>7}"
          + (f"{'% L3':>7}" if l3 else ""))
    for r in rl["families"]:
        p3 = r.get("pct_of_l3_roof")
        print(f"{r['family']:<46}{r['ms_per_step']:>9.2f}{100 * r['share']:>6.1f}%{r['gflops']:>9.2f}{r['gbs']:>7.2f}"
              f"{r['flop_per_byte']:>7.2f}  {r['bound']:<8}{100 * r['pct_of_roof']:>6.1f}%"
              + (f"{100 * p3:>6.1f}%" if l3 and p3 is not None else ""))


class RetrainTwin:
    """Times training steps of the PyTorch model of an architecture (dict of its JSON)."""

    def __init__(self, arch, batch, threads, lr=0.1, momentum=0.9, wd=3e-4, seed=0):
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        c = arch["space"]["input"][0]
        self.net, _, _ = export_net.build_module(arch, [0.0] * c, [1.0] * c)
        self.net.train()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=wd)
        sp = arch["space"]
        self.x = torch.rand(batch, *sp["input"])
        self.y = torch.randint(0, sp["classes"], (batch,))
        self.batch = batch
        self.step_ms = []
        self._step()
        self._step()  # warm-up

    def _step(self):
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(self.net(self.x), self.y)
        loss.backward()
        self.opt.step()
        return (time.perf_counter() - t0) * 1e3

    def round(self, steps):
        for _ in range(steps):
            self.step_ms.append(self._step())

    def result(self):
        med = statistics.median(self.step_ms)
        return {"step_ms_median": med, "img_per_s": self.batch / (med / 1e3), "step_ms": self.step_ms}
