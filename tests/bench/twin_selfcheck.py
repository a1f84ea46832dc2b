"""twin_selfcheck.py — checks the PyTorch twin without the C++ side.

1. λ counts and parameter names of the tiny / tiny-share / fmnist twins.
2. The twin (in-place edge sums, dead-op skipping, and its λ-traced test path)
   against a separately written naive reference in float64: loss, λ and weight
   gradients, BN running statistics, with and without masks.
3. A DSOD round trip: a dump written from a float32 twin (as twin_dump would
   write it) passes test_twin.compare_dump.
4. One w_step and one lambda_step run; λ stay ≥ 0, masked λ stay 0.
5. Timing of the fmnist twin (batch 64, 2 threads): median img/s over
   alternating w/λ steps.

Usage: /usr/bin/python3 tests/bench/twin_selfcheck.py [--steps 7] [--no-timing]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsod  # noqa: E402
import test_twin  # noqa: E402
import twin  # noqa: E402

OPS = ["sep3", "sep5", "max3", "avg3"]
TINY = dict(preset="tiny", levels=3, ops=OPS, input=[1, 8, 8], classes=3, stem="conv3", stem_channels=4,
            normal_units=[1, 1], widths=[4, 8], share=False, total_lambda=138)
TINY_SHARE = dict(TINY, share=True, total_lambda=70)
FMNIST = dict(preset="fmnist", levels=4, ops=OPS, input=[1, 28, 28], classes=10, stem="conv3", stem_channels=16,
              normal_units=[2, 2, 2], widths=[16, 32, 64], share=False, total_lambda=748)
SMALL_IN2X = dict(preset="custom", levels=2, ops=["sep3", "avg3"], input=[3, 16, 16], classes=4, stem="imagenet2x",
                  stem_channels=4, normal_units=[2, 1], widths=[4, 8], share=True, total_lambda=12)


def naive_forward(m, x):
    """Straightforward per-edge / per-branch forward of the twin's tensors."""
    def bn(t, b):
        return F.batch_norm(t, b.mean, b.var, b.gamma, b.beta, True, twin.BN_MOMENTUM, twin.BN_EPS)

    def lam(name):
        p = m.params[name]
        return p * m.masks[name] if name in m.masks else p

    for w, stride, b in m.stem:
        x = F.relu(bn(F.conv2d(x, w, stride=stride, padding=1), b))
        
    for blocks, red in m.stages:
        for blk in blocks:
            nodes = [x]
            for l in range(1, m.L + 1):
                level = []
                for j in range(1, m.N + 1):
                    if not blk["live"][(l, j)]:
                        level.append(torch.zeros_like(x))
                        continue
                    if l == 1:
                        a = x
                    else:
                        r = lam(blk["rows"][(l, j)])
                        a = sum(r[i] * nodes[i] for i in range(len(nodes)))
                    kind, dw, pw, b = blk["ops"][(l, j)]
                    if kind in ("sep3", "sep5"):
                        a = F.conv2d(F.conv2d(a, dw, padding=dw.shape[-1] // 2, groups=a.shape[1]), pw)
                    elif kind == "max3":
                        a = F.max_pool2d(a, 3, 1, 1)
                    else:
                        a = F.avg_pool2d(a, 3, 1, 1)
                    level.append(F.relu(bn(a, b)))
                nodes += level
            la = lam(blk["after"])
            short = x
            if blk["idc"] is not None:
                short = F.relu(bn(F.conv2d(x, blk["idc"][0]), blk["idc"][1]))
            if blk["live_after"]:
                y = sum(F.conv2d(la[k] * nodes[1 + k], blk["outc"][k]) for k in blk["live_after"])
                x = F.relu(bn(y, blk["out_bn"])) + short
            else:
                x = short
        if red is not None:
            lr_ = lam(red["lam"])
            x = sum(F.relu(bn(F.conv2d(x, w, stride=2, padding=w.shape[-1] // 2), b)) * lr_[i]
                    for i, (w, b) in enumerate([red["b0"], red["b1"]]) if i in red["live"])
    x = F.relu(bn(x, m.head_bn)).mean(dim=(2, 3))
    return F.linear(x, m.fc_w, m.fc_b)


def randomize(m, seed):
    """Random weights, β, γ (learned ones), running stats and λ, so that the check is not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.params.items():
            if twin.is_lambda(n):
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) + 0.2)
            elif n.endswith("/gamma"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            elif n.endswith("/beta") or n.endswith("/bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for n, t in m.buffers_by_name.items():
            if n.endswith("/mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g, dtype=t.dtype))
            elif n.endswith("/var"):
                t.copy_(1 + torch.rand(t.shape, generator=g, dtype=t.dtype))


def random_masks(m, frac, seed):
    rng = np.random.default_rng(seed)
    return {n: (rng.random(m.params[n].numel()) >= frac).astype(np.float32) for n in m.lambda_names()}


def snapshot(m):
    d = {"meta/space": json.dumps(m.space)}
    d.update({n: p.detach().numpy().copy() for n, p in m.params.items()})
    d.update({n: t.numpy().copy() for n, t in m.buffers_by_name.items()})
    return d


def check_naive(space, seed, frac=None, batch=6):
    ms = []
    for _ in range(3):
        m = twin.build_twin(space, dtype=torch.float64, seed=seed)
        randomize(m, seed)
        if frac:
            m.set_masks(random_masks(m, frac, seed))
        ms.append(m)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([batch] + list(space["input"]), generator=g, dtype=torch.float64)
    y = torch.randint(0, space["classes"], (batch,), generator=g)
    ms[2].enable_lambda_trace()  # the traced (test) path must give the same gradients
    outs = []
    for m, fwd in zip(ms, [lambda m, x: m(x), naive_forward, lambda m, x: m(x)]):
        m.train()
        loss = F.cross_entropy(fwd(m, x), y)
        loss.backward()
        outs.append(loss.item())
    assert abs(outs[0] - outs[1]) < 1e-10 and abs(outs[0] - outs[2]) < 1e-10, (outs, "loss")
    for a, b in ((ms[0], ms[1]), (ms[0], ms[2])):
        _same_state(a, b)
    dead = sum(not v for blk in [bb for bl, _ in ms[0].stages for bb in bl] for v in blk["live"].values())
    return outs[0], dead


def _same_state(a, b):
    for n in a.params:
        ga, gb = a.params[n].grad, b.params[n].grad
        ga = torch.zeros_like(a.params[n]) if ga is None else ga
        gb = torch.zeros_like(b.params[n]) if gb is None else gb
        assert torch.allclose(ga, gb, rtol=1e-8, atol=1e-11), n
    for n in a.buffers_by_name:
        assert torch.allclose(a.buffers_by_name[n], b.buffers_by_name[n], rtol=1e-10, atol=1e-12), n


def synthetic_dump(space, seed, frac, batch, path):
    """What twin_dump would write, computed by a float32 twin."""
    m = twin.build_twin(space, dtype=torch.float32, seed=seed)
    randomize(m, seed)
    if frac:
        m.set_masks(random_masks(m, frac, seed))
    d = snapshot(m)
    for n, t in m.masks.items():
        d["mask/" + n] = t.numpy().copy()
    for n in m.lambda_names():
        d.setdefault("mask/" + n, np.ones(m.params[n].numel(), np.float32))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([batch] + list(space["input"]), generator=g)
    y = torch.randint(0, space["classes"], (batch,), generator=g)
    d["input/x"] = x.numpy()
    d["input/y"] = y.numpy().astype(np.int32)
    m.train()
    logits = m(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    d["out/logits"] = logits.detach().numpy()
    d["out/loss"] = np.array([loss.item()], np.float32)
    for n, p in m.params.items():
        if p.grad is not None:
            d["grad/" + n] = p.grad.numpy()
        elif twin.is_lambda(n):
            d["grad/" + n] = np.zeros(p.numel(), np.float32)
    for n, t in m.buffers_by_name.items():
        if n.endswith(("/mean", "/var")):
            d["after/" + n] = t.numpy()
    dsod.write(path, d)


def time_fmnist(steps, batch=64, threads=2):
    torch.set_num_threads(threads)
    m = twin.build_twin(FMNIST, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    times = {"w": [], "lambda": []}
    for i in range(2 + steps):
        t0 = time.perf_counter()
        if i % 2 == 0:
            twin.w_step(m, x, y, 0.1, 0.9, 1e-4)
            kind = "w"
        else:
            twin.lambda_step(m, x, y, 0.1, 0.9, 0.01)
            kind = "lambda"
        if i >= 2:
            times[kind].append(time.perf_counter() - t0)
    allt = times["w"] + times["lambda"]
    return batch / statistics.median(allt), statistics.median(times["w"]), statistics.median(times["lambda"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)

    for sp in (TINY, TINY_SHARE, FMNIST, SMALL_IN2X):
        m = twin.build_twin(sp)
        assert m.total_lambda == sp["total_lambda"], (m.total_lambda, sp)
        print(f"names: {sp['preset']}{' share' if sp['share'] else ''}: {m.total_lambda} λ, "
              f"{len(m.params)} parameters, {len(m.buffers_by_name)} buffers")
    m = twin.build_twin(FMNIST)
    for n in ["stem/conv/weight", "stem/bn/gamma", "s1/u1/l1/o1/dw/weight", "s1/u1/l2/o2/pw/weight",
              "s1/u1/l3/o3/bn/gamma", "s1/u1/out/c16/weight", "s1/u1/out/bn/mean", "s1/u1/id/conv/weight",
              "s1/u1/id/bn/var", "s1/u1/lambda/l4/o4", "s3/u2/lambda/after", "s2/red/lambda",
              "s2/red/b1/conv/weight", "s2/red/b0/bn/beta", "head/bn/gamma", "head/fc/weight", "head/fc/bias"]:
        m.tensor(n)
    assert "s1/u2/id/conv/weight" not in m.params and "s3/red/lambda" not in m.params
    assert tuple(m.tensor("s1/u1/l1/o2/dw/weight").shape) == (16, 1, 5, 5)
    assert tuple(m.tensor("s2/red/b1/conv/weight").shape) == (64, 32, 3, 3)
    assert tuple(m.tensor("s1/u1/lambda/l4/o1").shape) == (13,)
    assert "s1/u1/l1/o1/bn/gamma" in m.buffers_by_name and "s1/u1/out/bn/gamma" in m.params
    ms = twin.build_twin(TINY_SHARE)
    assert "shared/lambda/l3/o4" in ms.params and "shared/lambda/after" in ms.params

    for sp, frac in ((TINY, None), (TINY_SHARE, None), (TINY, 0.3), (TINY, 0.6), (SMALL_IN2X, 0.4), (FMNIST, 0.3)):
        loss, dead = check_naive(sp, seed=7, frac=frac)
        print(f"naive: {sp['preset']}{' share' if sp['share'] else ''} zero-frac {frac}: "
              f"loss {loss:.6f}, {dead} dead ops — match")

    with tempfile.TemporaryDirectory() as tmp:
        for sp, frac in ((TINY, None), (TINY_SHARE, None), (FMNIST, None), (TINY, 0.3)):
            path = os.path.join(tmp, "d.dsod")
            synthetic_dump(sp, 11, frac, 8, path)
            print(f"dump: {sp['preset']} frac {frac}: " + test_twin.compare_dump(dsod.read(path)))

    m = twin.build_twin(TINY)
    m.set_masks(random_masks(m, 0.3, 1))
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 3, (6,))
    for _ in range(3):
        twin.w_step(m, x, y, 0.1, 0.9, 1e-4)
        twin.lambda_step(m, x, y, 0.5, 0.9, 0.05)
    for n in m.lambda_names():
        lam = m.params[n]
        assert (lam >= 0).all() and (lam[m.masks[n] == 0] == 0).all(), n
    print("steps: λ ≥ 0 and masked λ stay 0")

    if not args.no_timing:
        ips, tw, tl = time_fmnist(args.steps)
        print(f"timing: fmnist twin, batch 64, 2 threads: {ips:.1f} img/s "
              f"(w-step {tw * 1e3:.0f} ms, λ-step {tl * 1e3:.0f} ms)")
    print("selfcheck OK")


if __name__ == "__main__":
    main()
