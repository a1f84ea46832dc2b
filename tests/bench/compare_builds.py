"""compare_builds.py — is one dsonas build slower than another?  Side by side, in one run.

    /usr/bin/python3 tests/bench/compare_builds.py --before OLD/dsonas --after NEW/dsonas \
        [--rounds 5] [--threads 2] [--out FILE.json]

For a refactoring's "no slower" check (and any change that may cost speed).  In each of
R rounds, alternating which build goes first, it times with both builds:
  * search steps: `dsonas bench --config jobs/bench_fmnist.cfg --threads T --bench.steps 10`
    (its JSON lists every W- and λ-step's time; 2 warm-up steps are not timed);
  * retrain steps: `dsonas retrain --arch docs/results/fmnist-2026-11-28/arch.json` (the
    found network of jobs/fmnist.cfg) on synthetic data of the Fashion-MNIST shape (batch
    64, 100 steps, --log-every 1), every step's time from its metrics line (img/s → ms)
    after the first two.
Per build and kind: the median over all rounds' steps; the ratio after/before of the
medians (> 1: the new build is slower), with the spread of the per-round ratios
(min..max), and the verdict "no slower" when the ratio is ≤ 1 + the larger of 3 % and the
per-round spread.  Prints a table and writes the JSON (--out).  Both builds should be of
the same options (make COMMIT=text for byte-identical outputs).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

# The found network of jobs/fmnist.cfg: a retrain network with every op type.
FOUND_ARCH = "docs/results/fmnist-2026-11-28/arch.json"


def run(cmd, timeout=1800):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.exit(f"compare_builds: {' '.join(cmd)} failed (exit {p.returncode}):\n{p.stdout[-2000:]}")
    return p.stdout


def search_steps(exe, threads, tmp):
    out = os.path.join(tmp, "bench.json")
    run([exe, "bench", "--config", "jobs/bench_fmnist.cfg", "--threads", str(threads), "--bench.steps", "10",
         "--bench.json", out])
    with open(out) as f:
        d = json.load(f)
    return d["w_step_ms"] + d["lambda_step_ms"]


def retrain_steps(exe, threads, tmp, batch=64, steps=100, every=1):
    out = os.path.join(tmp, "rt")
    subprocess.run(["rm", "-rf", out])
    run([exe, "retrain", "--arch", FOUND_ARCH, "--data.dataset", "synthetic", "--space.preset", "fmnist",
         "--data.synthetic-train", "2048", "--data.synthetic-test", "64", "--data.batch", str(batch),
         "--threads", str(threads), "--max-steps", str(steps), "--log-every", str(every), "--progress", "false",
         "--out", out])
    ms = []
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(x) for x in f if '"img_per_s"' in x and '"event"' not in x]
    for r in rows[2:]:  # the first steps warm up
        ms.append(1e3 * batch / r["img_per_s"])
    return ms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    builds = {"before": os.path.abspath(a.before), "after": os.path.abspath(a.after)}
    kinds = {"search_step_ms": search_steps, "retrain_step_ms": retrain_steps}
    data = {k: {b: [] for b in builds} for k in kinds}
    per_round = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for k, fn in kinds.items():
                med = {}
                for b in order:
                    v = fn(builds[b], a.threads, tmp)
                    data[k][b] += v
                    med[b] = statistics.median(v)
                per_round[k].append(med["after"] / med["before"])
            print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{k} after/before {per_round[k][-1]:.3f}" for k in kinds),
                  flush=True)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.node(),
              "cpu": platform.processor() or platform.machine(), "threads": a.threads, "rounds": a.rounds,
              "builds": builds, "kinds": {}}
    print(f"{'kind':<18}{'before ms':>11}{'after ms':>10}{'ratio':>8}  per-round ratios      verdict")
    for k in kinds:
        mb, ma = statistics.median(data[k]["before"]), statistics.median(data[k]["after"])
        ratio = ma / mb
        lo, hi = min(per_round[k]), max(per_round[k])
        spread = hi - lo
        verdict = "no slower" if ratio <= 1 + max(0.03, spread) else "SLOWER"
        result["kinds"][k] = {"before_median": mb, "after_median": ma, "ratio_after_before": ratio,
                              "per_round_ratios": per_round[k], "verdict": verdict,
                              "before": data[k]["before"], "after": data[k]["after"]}
        print(f"{k:<18}{mb:>11.2f}{ma:>10.2f}{ratio:>8.3f}  {lo:.3f}..{hi:.3f}          {verdict}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if all(v["verdict"] == "no slower" for v in result["kinds"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
