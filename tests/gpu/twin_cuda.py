"""twin_cuda.py — time the PyTorch twin (tests/bench/twin.py) of a dsonas
supergraph on the GPU, for tests/gpu/run_on_gpu.sh.

    python3 tests/gpu/twin_cuda.py --space-from BENCH.json --batch 64 --steps 8 --label fmnist

reads the SearchSpace JSON from a `dsonas bench --bench.json` result (its
"space" field), builds the twin on the CPU (its initialisers use a CPU
generator), moves every parameter and buffer to CUDA in place (so the twin's
own references stay valid), then times `steps` search steps alternating
w_step / lambda_step after 2 warm-up steps, each step ended by
torch.cuda.synchronize().  --math fp32 (default, as dsonas's default): TF32 is
switched off for matmul and cuDNN; tf32: switched on (dsonas --gpu-math tf32);
bf16: TF32 on and the steps run under torch.autocast(bfloat16), what a PyTorch
user would do (dsonas --gpu-math bf16 only rounds its GEMM inputs).
--compile: the forward pass goes through torch.compile (Module.compile), with
4 warm-up steps instead of 2 so that compilation is not timed; the NAG/APG
updates stay eager Python loops as in the eager twin.  Prints one JSON object
(and appends it to --out when given): median W-/λ-step times, img/s, peak
torch.cuda memory, and the compile time when compiled.
"""
import contextlib
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
    ap.add_argument("--math", choices=["fp32", "tf32", "bf16"], default="fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to check this script without a GPU")
    a = ap.parse_args()
    res = {"label": a.label, "batch": a.batch, "math": a.math, "compiled": a.compile, "ok": False}
    try:
        with open(a.space_from) as f:
            space = json.load(f)["space"]
        tf32 = a.math != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.manual_seed(0)
        model = twin.build_twin(space, seed=0)
        cuda = a.device == "cuda"
        if cuda:
            to_cuda_in_place(model)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        if a.compile:
            if hasattr(model, "compile"):
                model.compile()  # compiles __call__ in place: the twin's own references stay valid
            else:
                model.forward = torch.compile(model.forward)
        ctx = (lambda: torch.autocast(a.device, dtype=torch.bfloat16)) if a.math == "bf16" else contextlib.nullcontext
        warm = 4 if a.compile else 2
        c, h, w = space["input"]
        x = torch.randn(a.batch, c, h, w, device=a.device)
        y = torch.randint(0, int(space["classes"]), (a.batch,), device=a.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = {"w": [], "lambda": []}
        warm_s = 0.0
        for i in range(warm + a.steps):
            kind = "w" if i % 2 == 0 else "lambda"
            sync()
            t0 = time.perf_counter()
            with ctx():
                if kind == "w":
                    twin.w_step(model, x, y, W_LR, MOMENTUM, WD)
                else:
                    twin.lambda_step(model, x, y, LAMBDA_LR, MOMENTUM, GAMMA)
            sync()
            if i >= warm:
                times[kind].append(time.perf_counter() - t0)
            else:
                warm_s += time.perf_counter() - t0
        wm = statistics.median(times["w"]) if times["w"] else float("nan")
        lm = statistics.median(times["lambda"]) if times["lambda"] else float("nan")
        step = (wm + lm) / 2
        res.update({
            "ok": True, "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(), "tf32": tf32, "warmup_s": round(warm_s, 2),
            "w_step_ms_median": round(1e3 * wm, 3), "lambda_step_ms_median": round(1e3 * lm, 3),
            "step_ms_mean_of_medians": round(1e3 * step, 3), "img_per_s": round(a.batch / step, 1),
            "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
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
