"""bench.py — dsonas vs the PyTorch twin: search-step speed and memory.

`make bench` runs
    /usr/bin/python3 tests/bench/bench.py --build build --out bench/results/latest.json
which
  (a) runs `<build>/dsonas bench --config jobs/bench_fmnist.cfg --threads 2 --bench.steps K --bench.json TMP`
      (K search steps, W and λ alternating, after 2 warm-up steps; its JSON lists every
      step's time) and
  (b) times the PyTorch twin (tests/bench/twin.py) on exactly that supergraph: batch 64,
      torch.set_num_threads(2), 2 warm-up steps, then S steps alternating w_step /
      lambda_step,
      interleaving (a) and (b) over R rounds so that a change of load on this shared
      machine hits both sides alike.  A search alternates W- and λ-steps 1:1, so each
      side's step time is the mean of the median W-step and the median λ-step over all
      rounds, and img/s = batch / that time;
  (c) runs `<build>/dsonas bench --space.preset cifar10 --data.batch 64 --threads 2 --bench.steps 1 --bench.json TMP2`
      for the memory figure of one CIFAR-10 search step (peak_rss_mb);
  (e) data-parallel scaling on this machine: `dsonas bench --config jobs/bench_fmnist.cfg
      --threads 1` as 1 rank and under `mpirun -np 2` (one core each), interleaved over R
      rounds; global img/s of each (median over rounds) and the share of the 2-rank step
      time spent waiting for the gradient reduction (reduce_share);
  (f) measures the machine's own limits first (tests/bench/machine_limits.cpp, built by
      `make all`): peak FP32 FMA throughput of a register-resident FMA loop and OpenBLAS
      sgemm (n = 2048), on 1 thread and on --threads, and a STREAM-style triad's memory
      bandwidth: the roofs the per-primitive figures are read against (issue 17);
  (g) a roofline table per primitive family (tests/bench/roofline.py) of the search step
      and of the found network's retrain step, from `dsonas bench --bench.profile true`
      runs, against (f);
  (h) retrain steps: `dsonas bench --arch A` for the found network of jobs/fmnist.cfg
      (FOUND_ARCH) and the hand-made baseline at its MACs, each against a PyTorch model
      of the same network (roofline.RetrainTwin), interleaved over R rounds; the ratio of
      the medians;
  (i) the stride-1 plane kernels (depthwise conv, pooling) in their AVX-512 and 8-wide
      forms side by side (tests/bench/plane_bench.cpp; same bits, so only time differs);
  (d) writes the output JSON (dsonas_img_per_s, pytorch_img_per_s, ratio, dsonas_step_ms,
      pytorch_step_ms, cifar10_search_step_peak_rss_mb, machine, date, commands, plus
      every step time) and prints a short table.
Before timing PyTorch it checks that torch uses OpenBLAS or MKL (torch.__config__.show()
and the libraries actually loaded) and records the BLAS.  Exit status 1 if a dsonas run
fails or no optimised BLAS is found (the JSON is still written, with nulls).

Options: --dsonas-steps K (default 10), --torch-steps S (default 4, even), --rounds R
(default 3), --threads T (default 2), --batch B (default 64), --skip-dsonas (twin only).
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import roofline  # noqa: E402
import twin  # noqa: E402

# The found network of jobs/fmnist.cfg (README "Results"), for the retrain comparison.
FOUND_ARCH = "docs/results/fmnist-2026-11-28/arch.json"

FMNIST_SPACE = {"preset": "fmnist", "levels": 4, "ops": ["sep3", "sep5", "max3", "avg3"],
                "input": [1, 28, 28], "classes": 10, "stem": "conv3", "stem_channels": 16,
                "normal_units": [2, 2, 2], "widths": [16, 32, 64], "share": False, "total_lambda": 748}
# Search hyper-parameters of docs/method.md §12 (they do not change the cost of a step).
W_LR, MOMENTUM, WD, LAMBDA_LR, GAMMA = 0.1, 0.9, 1e-4, 0.1, 0.01


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def blas_info():
    """Which BLAS torch uses: build config plus the BLAS libraries mapped into this process."""
    cfg = torch.__config__.show()
    a = torch.randn(256, 256)
    (a @ a).sum().item()  # make sure the BLAS is loaded
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                base = os.path.basename(path).lower()
                if any(k in base for k in ("openblas", "mkl", "libblas", "blis")):
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    low = cfg.lower() + " " + " ".join(libs).lower()
    kind = "OpenBLAS" if "openblas" in low else "MKL" if "mkl_" in low or "libmkl" in low or "blas_info=mkl" in low else None
    build = next((p.split("=", 1)[1] for p in cfg.replace(",", " ").split() if p.startswith("BLAS_INFO=")), "?")
    return {"blas": kind, "blas_info_build": build, "blas_libraries": sorted(libs),
            "mkldnn": "MKL-DNN" in cfg or "oneDNN" in cfg}


def run_dsonas(cmd, timeout, json_path=None, exe=None):
    """Runs a dsonas bench command; returns (json dict or None, error string or None)."""
    json_path = json_path or cmd[cmd.index("--bench.json") + 1]
    exe = exe or cmd[0]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    if not os.path.isfile(exe):
        return None, f"{exe} not found (build it first)"
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    if r.returncode != 0:
        return None, f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-400:]}"
    try:
        with open(json_path) as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return None, f"cannot read {json_path}: {e}"


class TwinTimer:
    """Times the twin's search steps (W and λ alternating) over several rounds."""

    def __init__(self, space, batch, threads, warmup=2, seed=0):
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.batch, self.threads, self.warmup = batch, threads, warmup
        self.model = twin.build_twin(space, seed=seed)
        c, h, w = space["input"]
        self.x = torch.randn(batch, c, h, w)
        self.y = torch.randint(0, int(space["classes"]), (batch,))
        self.times = {"w": [], "lambda": []}
        for i in range(warmup):
            self._step("w" if i % 2 == 0 else "lambda")

    def _step(self, kind):
        t0 = time.perf_counter()
        if kind == "w":
            twin.w_step(self.model, self.x, self.y, W_LR, MOMENTUM, WD)
        else:
            twin.lambda_step(self.model, self.x, self.y, LAMBDA_LR, MOMENTUM, GAMMA)
        return time.perf_counter() - t0

    def round(self, steps):
        for i in range(steps):
            kind = "w" if i % 2 == 0 else "lambda"
            self.times[kind].append(self._step(kind))

    def result(self):
        w, l = self.times["w"], self.times["lambda"]
        step = (statistics.median(w) + statistics.median(l)) / 2
        return {"img_per_s": self.batch / step, "step_ms_mean_of_medians": 1e3 * step,
                "w_step_ms_median": 1e3 * statistics.median(w),
                "lambda_step_ms_median": 1e3 * statistics.median(l),
                "steps": len(w) + len(l), "warmup": self.warmup, "batch": self.batch, "threads": self.threads,
                "w_step_ms": [round(1e3 * t, 1) for t in w], "lambda_step_ms": [round(1e3 * t, 1) for t in l],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--out", default="bench/results/latest.json")
    ap.add_argument("--config", default="jobs/bench_fmnist.cfg")
    ap.add_argument("--dsonas-steps", type=int, default=10, help="dsonas steps per round (after 2 warm-up)")
    ap.add_argument("--torch-steps", type=int, default=4, help="twin steps per round (after 2 warm-up in the first)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-dsonas", action="store_true", help="time the twin only")
    ap.add_argument("--skip-mpi", action="store_true", help="no 1- vs 2-rank measurement")
    ap.add_argument("--skip-retrain", action="store_true", help="no retrain comparison, no roofline")
    args = ap.parse_args()
    if args.torch_steps < 2 or args.torch_steps % 2 or args.rounds < 1:
        ap.error("--torch-steps must be even and >= 2, --rounds >= 1")

    exe = os.path.join(args.build, "dsonas")
    errors = []
    commands = []
    with tempfile.TemporaryDirectory() as tmp:
        # (a)+(b) dsonas and the twin, interleaved in rounds so that a change of load
        # on this shared machine hits both sides alike.  A search alternates W- and
        # λ-steps 1:1, so the step time is the mean of the two kinds' medians.
        # (f) the machine's limits, before anything else loads the machine
        limits = None
        ml = os.path.join(args.build, "tests", "machine_limits")
        if os.path.exists(ml):
            cmd = [ml, "--threads", str(args.threads), "--json", os.path.join(tmp, "limits.json")]
            commands.append(" ".join(cmd))
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
            if p.returncode == 0:
                with open(os.path.join(tmp, "limits.json")) as f:
                    limits = json.load(f)
            else:
                errors.append(f"machine_limits: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        else:
            errors.append(f"{ml} is missing (make all builds it)")
        # (i) the stride-1 plane kernels, AVX-512 form against 8-wide, side by side
        planes = None
        pb = os.path.join(args.build, "tests", "plane_bench")
        if os.path.exists(pb):
            cmd = [pb, "--threads", str(args.threads), "--json", os.path.join(tmp, "planes.json")]
            commands.append(" ".join(cmd))
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
            if p.returncode == 0:
                with open(os.path.join(tmp, "planes.json")) as f:
                    planes = json.load(f)
                planes_table = p.stdout
            else:
                errors.append(f"plane_bench: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        else:
            errors.append(f"{pb} is missing (make all builds it)")
        blas = blas_info()
        if blas["blas"] is None:
            errors.append("torch uses neither OpenBLAS nor MKL (BLAS_INFO=%s)" % blas["blas_info_build"])
        space = FMNIST_SPACE
        timer = None
        ds_w, ds_l, ds = [], [], None
        for r in range(args.rounds):
            if not args.skip_dsonas:
                cmd = [exe, "bench", "--config", args.config, "--threads", str(args.threads),
                       "--bench.steps", str(args.dsonas_steps), "--bench.json", os.path.join(tmp, "fmnist.json")]
                if r == 0:
                    commands.append(" ".join(cmd) + f"   (x{args.rounds} rounds)")
                d, err = run_dsonas(cmd, timeout=1800)
                if err:
                    errors.append(f"dsonas bench_fmnist: {err}")
                elif isinstance(d, dict):
                    ds = d
                    ds_w += d.get("w_step_ms", [])
                    ds_l += d.get("lambda_step_ms", [])
                    if isinstance(d.get("space"), dict):
                        space = d["space"]  # time exactly the supergraph dsonas timed
            if timer is None:
                commands.append(f"twin: build_twin({space.get('preset')}), batch {args.batch}, "
                                f"torch.set_num_threads({args.threads}), warm-up 2, then {args.torch_steps} "
                                f"alternating w_step/lambda_step per round (x{args.rounds} rounds)")
                print(f"$ {commands[-1]}", flush=True)
                timer = TwinTimer(space, args.batch, args.threads)
            timer.round(args.torch_steps)
        pt = timer.result()
        if ds_w and ds_l:
            step_ms = (statistics.median(ds_w) + statistics.median(ds_l)) / 2
            ds = dict(ds, img_per_s=args.batch / (step_ms / 1e3), step_ms_mean_of_medians=step_ms,
                      w_step_ms=ds_w, lambda_step_ms=ds_l,
                      w_step_ms_median=statistics.median(ds_w), lambda_step_ms_median=statistics.median(ds_l))

        # (c) memory of one CIFAR-10 search step.
        cf = None
        if not args.skip_dsonas:
            cmd = [exe, "bench", "--space.preset", "cifar10", "--data.batch", "64", "--threads", str(args.threads),
                   "--bench.steps", "1", "--bench.json", os.path.join(tmp, "cifar10.json")]
            commands.append(" ".join(cmd))
            cf, err = run_dsonas(cmd, timeout=1800)
            if err:
                errors.append(f"dsonas cifar10: {err}")

        # (e) 1 vs 2 MPI ranks, one thread each, interleaved
        scaling = None
        if not args.skip_dsonas and not args.skip_mpi:
            mpirun = os.environ.get("MPIRUN", "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                                              "mpirun --oversubscribe --bind-to none")
            base = [exe, "bench", "--config", args.config, "--threads", "1", "--bench.steps", str(args.dsonas_steps)]
            ips = {1: [], 2: []}
            shares, red_ms, last = [], [], {}
            for r in range(args.rounds):
                for ranks in (1, 2):
                    out = os.path.join(tmp, f"ranks{ranks}.json")
                    cmd = base + ["--bench.json", out]
                    if ranks == 2:
                        cmd = ["bash", "-c", f"OMP_NUM_THREADS=1 {mpirun} -np 2 " + " ".join(shlex.quote(c) for c in cmd)]
                    if r == 0:
                        commands.append(" ".join(cmd) + f"   (x{args.rounds} rounds)")
                    d, err = run_dsonas(cmd, timeout=1800, json_path=out, exe=exe)
                    if err:
                        errors.append(f"dsonas bench {ranks} rank(s): {err}")
                        continue
                    ips[ranks].append(d["img_per_s"])
                    last[ranks] = d
                    if ranks == 2:
                        shares.append(d["reduce_share"])
                        red_ms.append(d["reduce_ms_median"])
            if ips[1] and ips[2]:
                i1, i2 = statistics.median(ips[1]), statistics.median(ips[2])
                scaling = {"img_per_s_1rank_1thread": i1, "img_per_s_2ranks_1thread": i2, "speedup_2ranks": i2 / i1,
                           "efficiency_2ranks": i2 / (2 * i1), "reduce_share_2ranks": statistics.median(shares),
                           "reduce_ms_median_2ranks": statistics.median(red_ms),
                           "flat_grad_bytes": 4 * (last[2]["weights"] + last[2]["lambda"]),
                           "img_per_s_rounds": ips, "reduce_share_rounds": shares}

        # (g) rooflines, (h) retrain steps against the PyTorch model of the same network
        rl_search = rl_retrain = None
        retrain = {}
        if not args.skip_dsonas and not args.skip_retrain:
            base = [exe, "bench", "--config", args.config, "--threads", str(args.threads),
                    "--bench.steps", str(args.dsonas_steps)]

            def profiled_roofline(extra, name):
                """The roofline of a `dsonas bench --bench.profile true` run (None on failure)."""
                cmd = base + extra + ["--bench.profile", "true", "--bench.json", os.path.join(tmp, f"prof_{name}.json")]
                commands.append(" ".join(cmd))
                d, err = run_dsonas(cmd, timeout=1800)
                if err:
                    errors.append(f"dsonas bench {' '.join(extra)} --bench.profile: {err}")
                    return None
                return roofline.roofline(d["profile"], limits)

            if limits:
                rl_search = profiled_roofline([], "search")
            found_macs = None
            for name in ("found", "baseline"):
                arch = ["--arch", FOUND_ARCH] if name == "found" else ["--arch", "baseline"]
                if name == "baseline":
                    if found_macs is None:
                        break
                    arch += ["--retrain.target-macs", "%.0f" % found_macs]
                out = os.path.join(tmp, f"retrain_{name}.json")
                ds_ms, tw, first = [], None, None
                for r in range(args.rounds):
                    cmd = base + arch + ["--bench.json", out]
                    if r == 0:
                        commands.append(" ".join(cmd) + f"   (x{args.rounds} rounds)")
                    d, err = run_dsonas(cmd, timeout=1800)
                    if err:
                        errors.append(f"dsonas bench {' '.join(arch)}: {err}")
                        break
                    first = first or d
                    ds_ms += d["step_ms"]
                    if tw is None:
                        tw = roofline.RetrainTwin(d["architecture"], args.batch, args.threads)
                    tw.round(args.torch_steps)
                if not ds_ms:
                    continue
                if name == "found":
                    found_macs = first["macs"]
                pt_r = tw.result()
                med = statistics.median(ds_ms)
                retrain[name] = {"macs": first["macs"], "params": first["params"], "width": first["width"],
                                 "dsonas_step_ms_median": med, "dsonas_img_per_s": args.batch / (med / 1e3),
                                 "pytorch_step_ms_median": pt_r["step_ms_median"],
                                 "pytorch_img_per_s": pt_r["img_per_s"],
                                 "ratio": pt_r["step_ms_median"] / med, "dsonas_step_ms": ds_ms,
                                 "pytorch_step_ms": pt_r["step_ms"]}
            if limits and "found" in retrain:
                rl_retrain = profiled_roofline(["--arch", FOUND_ARCH], "retrain")

    def get(d, k):
        return d.get(k) if isinstance(d, dict) else None

    ds_ips = get(ds, "img_per_s")
    result = {
        "dsonas_img_per_s": ds_ips,
        "pytorch_img_per_s": pt["img_per_s"],
        "ratio": (ds_ips / pt["img_per_s"]) if ds_ips else None,
        "dsonas_step_ms": get(ds, "step_ms_mean_of_medians"),
        "pytorch_step_ms": pt["step_ms_mean_of_medians"],
        "cifar10_search_step_peak_rss_mb": get(cf, "peak_rss_mb"),
        "dsonas_peak_rss_mb": get(ds, "peak_rss_mb"),
        "pytorch_peak_rss_mb": pt["peak_rss_mb"],
        "pytorch_detail": pt,
        "dsonas_detail": ds,
        "cifar10_detail": cf,
        "scaling": scaling,
        "machine_limits": limits,
        "plane_kernels": planes,
        "roofline_search": rl_search,
        "roofline_retrain": rl_retrain,
        "retrain": retrain,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            **blas,
        },
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commands": commands,
        "errors": errors,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    print()
    print(f"{'':28s}{'dsonas':>12s}{'pytorch':>12s}")
    print(f"{'img/s (W/λ step pair)':28s}{fmt(ds_ips, '12.1f')}{fmt(pt['img_per_s'], '12.1f')}")
    print(f"{'step ms (mean of medians)':28s}{fmt(get(ds, 'step_ms_mean_of_medians'), '12.1f')}"
          f"{fmt(pt['step_ms_mean_of_medians'], '12.1f')}")
    print(f"{'peak RSS MB (fmnist)':28s}{fmt(get(ds, 'peak_rss_mb'), '12.1f')}{fmt(pt['peak_rss_mb'], '12.1f')}")
    print(f"{'ratio dsonas/pytorch':28s}{fmt(result['ratio'], '12.2f')}")
    print(f"{'cifar10 step peak RSS MB':28s}{fmt(result['cifar10_search_step_peak_rss_mb'], '12.1f')}")
    if scaling:
        print(f"{'1 rank x 1 thread img/s':28s}{scaling['img_per_s_1rank_1thread']:12.1f}")
        print(f"{'2 ranks x 1 thread img/s':28s}{scaling['img_per_s_2ranks_1thread']:12.1f}"
              f"   speed-up {scaling['speedup_2ranks']:.2f}, reduction {100 * scaling['reduce_share_2ranks']:.2f} % of step")
    for name, rt in retrain.items():
        print(f"{'retrain ' + name + ' img/s':28s}{rt['dsonas_img_per_s']:12.1f}{rt['pytorch_img_per_s']:12.1f}"
              f"   ratio {rt['ratio']:.2f} ({rt['macs'] / 1e6:.2f} M MACs)")
    if rl_search:
        roofline.print_roofline("search step", rl_search)
    if rl_retrain:
        roofline.print_roofline("retrain step (found network)", rl_retrain)
    if planes:
        print()
        print(planes_table.rstrip())
    if limits:
        print(f"machine limits ({limits['threads']} threads): FMA peak {limits['fma_gflops_node']['best']:.0f} GFLOP/s "
              f"({limits['fma_isa']}; 1 thread {limits['fma_gflops_1thread']['best']:.0f}), OpenBLAS sgemm "
              f"{limits['sgemm_gflops_node']['best']:.0f} GFLOP/s (1 thread {limits['sgemm_gflops_1thread']['best']:.0f}), "
              f"triad {limits['triad_gbs_node']['best']:.1f} GB/s (1 thread {limits['triad_gbs_1thread']['best']:.1f})")
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, torch "
          f"{torch.__version__}, BLAS {blas['blas']}")
    print(f"wrote {args.out}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
