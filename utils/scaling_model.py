#!/usr/bin/env python3
"""scaling_model.py — how a data-parallel dsonas search scales to many GPUs.

A step of data-parallel search is: forward + backward on the local batch (compute,
independent of the number of GPUs p), then a sum of the flat gradient buffer (S bytes:
every weight and λ as fp32) over the p ranks. On the CPU (MPI) dsonas starts reducing the
gradient buckets of finished layers while the rest of the backward pass runs, so only the
part of the reduction that outlasts the remaining backward pass is exposed; the GPU
(NCCL) path reduces the whole buffer after the backward pass (--overlap 0, the default).
Per step there are also 1-2 tiny collectives (stop flags; metrics at log steps): a few
latencies, 2 ceil(log2 p) alpha each, added to every step.

Model (all times in seconds):
    ring all-reduce   t_ring(p) = 2 (p-1)/p * S / B(p) + 2 (p-1) * alpha(p)
    tree all-reduce   t_tree(p) = 2 * S / B(p) + 2 * ceil(log2 p) * alpha(p)      (NCCL's
                      double binary tree: bandwidth term ~2S/B, latency term ~log p)
    NCCL picks the faster of the two;  t_ar(p) = min(t_ring, t_tree)
    B(p), alpha(p): the intra-node values (NVLink) while p <= gpus_per_node, else the
                      inter-node values (InfiniBand; the slowest link sets the ring's pace)
    exposed(p)      = max(0, t_ar(p) - overlap * t_backward),   t_backward = 2/3 t_compute
    t_step(p)       = t_compute + exposed(p)
    efficiency(p)   = t_compute / t_step(p);  images/s = p * batch / t_step(p)

Usage:
    /usr/bin/python3 utils/scaling_model.py [--bytes S | --dsonas build/dsonas --preset imagenet]
        [--compute SECONDS] [--batch 64] [--markdown]
Every assumption is a flag with its default printed in the output.
"""
import argparse
import json
import math
import subprocess
import sys


def flat_bytes_from_dsonas(exe, preset):
    out = subprocess.run([exe, "bench", "--space.preset", preset, "--bench.steps", "0"], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["flat_grad_bytes"]


def model(S, p, a):
    intra = p <= a.gpus_per_node
    B = (a.nvlink_gbs if intra else a.ib_gbs) * 1e9
    alpha = (a.alpha_intra_us if intra else a.alpha_inter_us) * 1e-6
    t_ring = 2 * (p - 1) / p * S / B + 2 * (p - 1) * alpha
    t_tree = 2 * S / B + 2 * math.ceil(math.log2(p)) * alpha if p > 1 else 0.0
    t_ar = min(t_ring, t_tree) if p > 1 else 0.0
    exposed = max(0.0, t_ar - a.overlap * (2.0 / 3.0) * a.compute)
    small = 2 * math.ceil(math.log2(p)) * alpha if p > 1 else 0.0  # the per-step flags sum
    t_step = a.compute + exposed + small
    return dict(p=p, t_ring=t_ring, t_tree=t_tree, t_ar=t_ar, exposed=exposed, t_step=t_step,
                efficiency=a.compute / t_step, img_per_s=p * a.batch / t_step)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", type=float, help="flat gradient buffer in bytes (default: from dsonas)")
    ap.add_argument("--dsonas", default="build/dsonas", help="binary used to size the buffer")
    ap.add_argument("--preset", default="imagenet", help="search space preset to size")
    ap.add_argument("--compute", type=float, default=0.22,
                    help="forward+backward seconds per step per GPU (assumption, see README)")
    ap.add_argument("--batch", type=int, default=128, help="images per GPU per step")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--nvlink-gbs", type=float, default=300.0, help="NCCL bus bandwidth inside a node, GB/s")
    ap.add_argument("--ib-gbs", type=float, default=45.0, help="per-GPU bus bandwidth between nodes, GB/s (NDR 400 Gb/s)")
    ap.add_argument("--alpha-intra-us", type=float, default=5.0, help="per-hop latency inside a node, µs")
    ap.add_argument("--alpha-inter-us", type=float, default=10.0, help="per-hop latency between nodes, µs")
    ap.add_argument("--overlap", type=float, default=0.0,
                    help="fraction of the backward pass the reduction can hide behind (bucketing)")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    S = a.bytes if a.bytes else flat_bytes_from_dsonas(a.dsonas, a.preset)
    rows = [model(S, p, a) for p in (1, 8, 16, 32, 64, 128, 256, 512)]
    print(f"flat gradient buffer {S / 2**20:.1f} MiB ({a.preset if not a.bytes else 'given'}); compute "
          f"{a.compute * 1e3:.0f} ms/step/GPU at batch {a.batch}; {a.gpus_per_node} GPUs/node, NVLink "
          f"{a.nvlink_gbs:g} GB/s, IB {a.ib_gbs:g} GB/s/GPU, alpha {a.alpha_intra_us:g}/{a.alpha_inter_us:g} µs, "
          f"overlap {a.overlap:g} of the backward pass")
    if a.markdown:
        print("\n| GPUs | ring all-reduce ms | tree all-reduce ms | exposed ms | step ms | efficiency | images/s |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['p']} | {r['t_ring'] * 1e3:.1f} | {r['t_tree'] * 1e3:.1f} | {r['exposed'] * 1e3:.1f} | "
                  f"{r['t_step'] * 1e3:.0f} | {100 * r['efficiency']:.1f} % | {r['img_per_s']:.0f} |")
    else:
        print(f"{'GPUs':>5} {'ring ms':>9} {'tree ms':>9} {'exposed':>9} {'step ms':>9} {'eff':>7} {'img/s':>9}")
        for r in rows:
            print(f"{r['p']:5d} {r['t_ring'] * 1e3:9.1f} {r['t_tree'] * 1e3:9.1f} {r['exposed'] * 1e3:9.1f} "
                  f"{r['t_step'] * 1e3:9.0f} {100 * r['efficiency']:6.1f}% {r['img_per_s']:9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
