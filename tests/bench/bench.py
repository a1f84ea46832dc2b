"""bench.py — dsonas vs the PyTorch twin: search-step speed and memory.

`make bench` runs
    /usr/bin/python3 tests/bench/bench.py --build build --out bench/results/latest.json
which
  (a) runs `<build>/dsonas bench --config jobs/bench_fmnist.cfg --threads 2 --bench.steps K --bench.json TMP`
      (dsonas search steps on the bench_fmnist supergraph; its JSON gives img_per_s
      (median over steps), step_ms_median, steps, peak_rss_mb);
  (b) times the PyTorch twin (tests/bench/twin.py) on the same supergraph: fmnist
      space, batch 64, torch.set_num_threads(2), 2 warm-up steps, then ≥7 search
      steps alternating w_step / lambda_step; img/s = batch / median step time;
  (c) runs `<build>/dsonas bench --space.preset cifar10 --data.batch 64 --threads 2 --bench.steps 1 --bench.json TMP2`
      for the memory figure of one CIFAR-10 search step (peak_rss_mb);
  (d) writes the output JSON (dsonas_img_per_s, pytorch_img_per_s, ratio,
      dsonas_step_ms_median, pytorch_step_ms_median, cifar10_search_step_peak_rss_mb,
      machine, date, commands, plus details) and prints a short table.
Before timing PyTorch it checks that torch uses OpenBLAS or MKL (torch.__config__.show()
and the libraries actually loaded) and records the BLAS.  Exit status 1 if a dsonas run
fails or no optimised BLAS is found (the JSON is still written, with nulls).

Options: --dsonas-steps K (default 20), --torch-steps S (default 8, at least 7),
--threads T (default 2), --batch B (default 64), --skip-dsonas (twin only).
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
import twin  # noqa: E402

FMNIST_SPACE = {"preset": "fmnist", "levels": 4, "ops": ["sep3", "sep5", "max3", "avg3"],
                "input": [1, 28, 28], "classes": 10, "stem": "conv3", "stem_channels": 16,
                "normal_units": [2, 2, 2], "widths": [16, 32, 64], "share": False, "total_lambda": 748}
# Search hyper-parameters of ALGORITHM.md §12 (they do not change the cost of a step).
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


def run_dsonas(cmd, timeout):
    """Runs a dsonas bench command; returns (json dict or None, error string or None)."""
    json_path = cmd[cmd.index("--bench.json") + 1]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    if not os.path.isfile(cmd[0]):
        return None, f"{cmd[0]} not found (build it first)"
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


def time_twin(space, batch, threads, steps, warmup=2, seed=0):
    """Times alternating w/λ search steps of the twin; returns a result dict."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = twin.build_twin(space, seed=seed)
    c, h, w = space["input"]
    x = torch.randn(batch, c, h, w)
    y = torch.randint(0, int(space["classes"]), (batch,))
    times = {"w": [], "lambda": []}
    for i in range(warmup + steps):
        kind = "w" if i % 2 == 0 else "lambda"
        t0 = time.perf_counter()
        if kind == "w":
            twin.w_step(model, x, y, W_LR, MOMENTUM, WD)
        else:
            twin.lambda_step(model, x, y, LAMBDA_LR, MOMENTUM, GAMMA)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times[kind].append(dt)
    all_t = times["w"] + times["lambda"]
    med = statistics.median(all_t)
    # W and λ steps differ (~1.3 vs ~0.9 s), so the per-step median depends on the step
    # count's parity; the median over W+λ pairs is given too, as a steadier figure.
    pairs = [(a + b) / 2 for a, b in zip(times["w"], times["lambda"])]
    return {"img_per_s": batch / med, "step_ms_median": 1e3 * med,
            "img_per_s_pair_median": batch / statistics.median(pairs),
            "w_step_ms_median": 1e3 * statistics.median(times["w"]),
            "lambda_step_ms_median": 1e3 * statistics.median(times["lambda"]),
            "steps": len(all_t), "warmup": warmup, "batch": batch, "threads": threads,
            "step_ms": [round(1e3 * t, 1) for t in all_t],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--out", default="bench/results/latest.json")
    ap.add_argument("--config", default="jobs/bench_fmnist.cfg")
    ap.add_argument("--dsonas-steps", type=int, default=20)
    ap.add_argument("--torch-steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-dsonas", action="store_true", help="time the twin only")
    args = ap.parse_args()
    if args.torch_steps < 7:
        ap.error("--torch-steps must be at least 7")

    exe = os.path.join(args.build, "dsonas")
    errors = []
    commands = []
    with tempfile.TemporaryDirectory() as tmp:
        # (a) dsonas on the bench supergraph.
        ds = None
        if not args.skip_dsonas:
            cmd = [exe, "bench", "--config", args.config, "--threads", str(args.threads),
                   "--bench.steps", str(args.dsonas_steps), "--bench.json", os.path.join(tmp, "fmnist.json")]
            commands.append(" ".join(cmd))
            ds, err = run_dsonas(cmd, timeout=1800)
            if err:
                errors.append(f"dsonas bench_fmnist: {err}")

        # (b) the PyTorch twin.
        blas = blas_info()
        if blas["blas"] is None:
            errors.append("torch uses neither OpenBLAS nor MKL (BLAS_INFO=%s)" % blas["blas_info_build"])
        space = FMNIST_SPACE
        if isinstance(ds, dict) and isinstance(ds.get("space"), dict):
            space = ds["space"]  # use exactly the supergraph dsonas timed, if it says
        commands.append(f"twin: build_twin({space.get('preset')}), batch {args.batch}, "
                        f"torch.set_num_threads({args.threads}), warm-up 2, {args.torch_steps} "
                        f"alternating w_step/lambda_step")
        print(f"$ {commands[-1]}", flush=True)
        pt = time_twin(space, args.batch, args.threads, args.torch_steps)

        # (c) memory of one CIFAR-10 search step.
        cf = None
        if not args.skip_dsonas:
            cmd = [exe, "bench", "--space.preset", "cifar10", "--data.batch", "64", "--threads", str(args.threads),
                   "--bench.steps", "1", "--bench.json", os.path.join(tmp, "cifar10.json")]
            commands.append(" ".join(cmd))
            cf, err = run_dsonas(cmd, timeout=1800)
            if err:
                errors.append(f"dsonas cifar10: {err}")

    def get(d, k):
        return d.get(k) if isinstance(d, dict) else None

    ds_ips = get(ds, "img_per_s")
    result = {
        "dsonas_img_per_s": ds_ips,
        "pytorch_img_per_s": pt["img_per_s"],
        "ratio": (ds_ips / pt["img_per_s"]) if ds_ips else None,
        "dsonas_step_ms_median": get(ds, "step_ms_median"),
        "pytorch_step_ms_median": pt["step_ms_median"],
        "cifar10_search_step_peak_rss_mb": get(cf, "peak_rss_mb"),
        "dsonas_peak_rss_mb": get(ds, "peak_rss_mb"),
        "pytorch_peak_rss_mb": pt["peak_rss_mb"],
        "pytorch_detail": pt,
        "dsonas_detail": ds,
        "cifar10_detail": cf,
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
    print(f"{'img/s (median step)':28s}{fmt(ds_ips, '12.1f')}{fmt(pt['img_per_s'], '12.1f')}")
    print(f"{'step ms (median)':28s}{fmt(get(ds, 'step_ms_median'), '12.1f')}{fmt(pt['step_ms_median'], '12.1f')}")
    print(f"{'peak RSS MB (fmnist)':28s}{fmt(get(ds, 'peak_rss_mb'), '12.1f')}{fmt(pt['peak_rss_mb'], '12.1f')}")
    print(f"{'ratio dsonas/pytorch':28s}{fmt(result['ratio'], '12.2f')}")
    print(f"{'cifar10 step peak RSS MB':28s}{fmt(result['cifar10_search_step_peak_rss_mb'], '12.1f')}")
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, torch "
          f"{torch.__version__}, BLAS {blas['blas']}")
    print(f"wrote {args.out}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
