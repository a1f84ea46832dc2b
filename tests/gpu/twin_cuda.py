"""twin_cuda.py — time the PyTorch twin (tests/bench/twin.py) of a dsonas
supergraph on the GPU, for tests/gpu/run_on_gpu.sh.

    python3 tests/gpu/twin_cuda.py --space-from BENCH.json --batch 64 --steps 8 --label fmnist

reads the SearchSpace JSON from a `dsonas bench --bench.json` result (its
"space" field), builds the twin on the CPU (its initialisers use a CPU
generator), moves every parameter and buffer to CUDA in place (so the twin's
own references stay valid), then times `steps` search steps alternating
w_step / lambda_step after 2 warm-up steps, each step ended by
torch.cuda.synchronize().  FP32 throughout: TF32 is switched off for matmul and
cuDNN, as dsonas uses plain FP32.  Prints one JSON object (and appends it to
--out when given): median W-/λ-step times, img/s, peak torch.cuda memory.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import twin  # noqa: E402

W_LR, MOMENTUM, WD, LAMBDA_LR, GAMMA = 0.1, 0.9, 1e-4, 0.1, 0.01


def to_cuda_in_place(model):
    seen = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        t.data = t.data.to("cuda")
    for t in list(model.buffers_by_name.values()):
        if t.device.type != "cuda":
            t.data = t.data.to("cuda")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space-from", required=True, help="dsonas bench JSON with a 'space' field")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--label", default="twin")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    res = {"label": a.label, "batch": a.batch, "ok": False}
    try:
        with open(a.space_from) as f:
            space = json.load(f)["space"]
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.manual_seed(0)
        model = twin.build_twin(space, seed=0)
        to_cuda_in_place(model)
        c, h, w = space["input"]
        x = torch.randn(a.batch, c, h, w, device="cuda")
        y = torch.randint(0, int(space["classes"]), (a.batch,), device="cuda")
        torch.cuda.reset_peak_memory_stats()
        times = {"w": [], "lambda": []}
        for i in range(2 + a.steps):
            kind = "w" if i % 2 == 0 else "lambda"
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            if kind == "w":
                twin.w_step(model, x, y, W_LR, MOMENTUM, WD)
            else:
                twin.lambda_step(model, x, y, LAMBDA_LR, MOMENTUM, GAMMA)
            torch.cuda.synchronize()
            if i >= 2:
                times[kind].append(time.perf_counter() - t0)
        wm = statistics.median(times["w"]) if times["w"] else float("nan")
        lm = statistics.median(times["lambda"]) if times["lambda"] else float("nan")
        step = (wm + lm) / 2
        res.update({
            "ok": True, "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(), "tf32": False,
            "w_step_ms_median": round(1e3 * wm, 3), "lambda_step_ms_median": round(1e3 * lm, 3),
            "step_ms_mean_of_medians": round(1e3 * step, 3), "img_per_s": round(a.batch / step, 1),
            "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "w_step_ms": [round(1e3 * t, 2) for t in times["w"]],
            "lambda_step_ms": [round(1e3 * t, 2) for t in times["lambda"]],
        })
    except Exception as e:  # report, never hide: the run script keeps going
        res["error"] = f"{type(e).__name__}: {e}"
    line = json.dumps(res)
    print(line, flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.write(line + "\n")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
