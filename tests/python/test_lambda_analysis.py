"""Tests of utils/lambda_analysis.py (run: /usr/bin/python3 -m pytest -q tests/python).

The trajectories are built here with h5py in the documented layout
(docs/checkpoint-format.md, "The λ trajectory file"), so only the last test needs the
dsonas binary (DSONAS_BIN or <repo>/build/dsonas; skipped when it is missing)."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "utils", "lambda_analysis.py")

_spec = importlib.util.spec_from_file_location("lambda_analysis", TOOL)
la = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(la)

OPS = ["sep3", "max3"]          # N = 2
L = 3
N = len(OPS)
STEPS = np.arange(10, 101, 10)  # 10 records: 10, 20, ..., 100


def idx(l, j):
    """Index of producer op (l, j) inside an edge-λ row (0 = block input)."""
    return 1 + N * (l - 1) + (j - 1)


def aidx(l, j):
    """Index of op (l, j) in λ_after."""
    return N * (l - 1) + (j - 1)


def at(step):
    """Record mask: records with step >= `step`."""
    return STEPS >= step


def scenario_lambda(seed=0):
    """λ of one block (L=3, N=2) with known deaths:

    * l3/o1[input] becomes 0 at step 40 and stays 0          -> entry death 40
    * l3/o1[← l1/o1] is 0 only at step 50, then revives        -> entry alive
    * l1/o2: λ_after 0 from step 30, every consumer edge 0 from step 60
                                                               -> op dead at 60
    * l2/o2: all its inputs 0 from step 70                     -> op dead at 70
    * l3/o2: only input is l2/o2 (edge stays > 0!), after > 0  -> op dead at 70 (§6.1 pass 2)
    Survivors at the end: l1/o1, l2/o1, l3/o1 (all sep3)."""
    rng = np.random.default_rng(seed)
    n = len(STEPS)
    lam = {}
    for l in (2, 3):
        for j in (1, 2):
            lam["l%d/o%d" % (l, j)] = rng.uniform(0.2, 1.0, size=(n, 1 + N * (l - 1)))
    after = rng.uniform(0.2, 1.0, size=(n, N * L))
    lam["l3/o1"][at(40), 0] = 0.0
    lam["l3/o1"][STEPS == 50, idx(1, 1)] = 0.0
    after[at(30), aidx(1, 2)] = 0.0
    for g in ("l2/o1", "l2/o2", "l3/o1", "l3/o2"):
        lam[g][at(60), idx(1, 2)] = 0.0
    lam["l2/o2"][at(70), :] = 0.0
    lam["l3/o2"][:, :] = 0.0
    lam["l3/o2"][:, idx(2, 2)] = 0.7
    return lam, after


def write_run(d, lam=None, after=None, gamma=None, share=False, metrics=True, red=True,
              steps=STEPS, images=None):
    """Write DIR/lambda_trajectory.h5 (+ metrics.jsonl, config.resolved.cfg); /images
    only when `images` is given (files of older versions lack it)."""
    os.makedirs(d, exist_ok=True)
    if lam is None:
        lam, after = scenario_lambda()
    n = len(steps)
    prefix = "shared" if share else "s1/u1"
    groups = {"%s/lambda/%s" % (prefix, k): v for k, v in lam.items()}
    groups["%s/lambda/after" % prefix] = after
    if red:
        groups["s1/red/lambda"] = np.tile([0.9, 0.4], (n, 1))
        groups["s1/red/lambda"][at(90), 1] = 0.0
    total = sum(v.shape[1] for v in groups.values())
    space = {"preset": "test", "levels": L, "ops": OPS, "input": [1, 8, 8], "classes": 3,
             "stem": "conv3", "stem_channels": 4, "normal_units": [1, 1] if red else [1],
             "widths": [4, 8] if red else [4], "share": share, "total_lambda": total}
    zero = np.zeros(n, dtype=np.int64)
    for v in groups.values():
        zero += (v == 0).sum(axis=1)
    rng = np.random.default_rng(1)
    data = {
        "step": np.asarray(steps, dtype=np.int64),
        "loss": np.linspace(2.0, 0.5, n) + rng.uniform(0, 0.1, n),
        "acc": np.linspace(0.2, 0.9, n),
        "live_macs": np.linspace(1e6, 2.5e5, n),
        "zero_lambda": zero,
        "live_edges": total - zero,
    }
    if images is not None:
        data["images"] = np.asarray(images, dtype=np.int64)
    with h5py.File(os.path.join(d, "lambda_trajectory.h5"), "w") as f:
        f.attrs["format"] = "dsonas-trajectory"
        f.attrs["format_version"] = np.int64(1)
        f.attrs["space"] = json.dumps(space)
        for k, v in data.items():
            f.create_dataset(k, data=v, chunks=(256,), maxshape=(None,), fletcher32=True)
        for g, v in groups.items():
            f.create_dataset("lambda/" + g, data=v.astype(np.float32),
                             chunks=(256, v.shape[1]), maxshape=(None, v.shape[1]),
                             fletcher32=True)
    if metrics:
        with open(os.path.join(d, "metrics.jsonl"), "w") as fh:
            for i in range(1, n, 2):
                rec = {"stage": "search", "step": int(steps[i]), "epoch": 0.5 * i, "lr": 0.1,
                       "loss": 1.5 - 0.1 * i, "acc": 0.3 + 0.05 * i, "img_per_s": 100.0,
                       "live_macs": float(data["live_macs"][i]), "zero_lambda": int(zero[i]),
                       "total_lambda": total, "live_ops": 3, "live_edges": 3,
                       "time_s": 0.1 * i}
                fh.write(json.dumps(rec) + "\n")
                if i == 3:  # a resumed run re-logs a step: the later line wins
                    rec["loss"] = 0.123
                    fh.write(json.dumps(rec) + "\n")
            fh.write(json.dumps({"stage": "search", "event": "final", "step": int(steps[-1]),
                                 "val_acc": 0.81, "test_acc": 0.77,
                                 "live_macs": float(data["live_macs"][-1]),
                                 "zero_lambda": int(zero[-1]), "total_lambda": total,
                                 "live_ops": 3}) + "\n")
    with open(os.path.join(d, "config.resolved.cfg"), "w") as fh:
        fh.write("# resolved configuration (dsonas search)\nseed = 1\nmax-steps = 100\n\n"
                 "[optim]\nlr = 0.1\n\n[search]\ngamma = %s\nlambda-lr-mult = 5\n"
                 % (gamma if gamma is not None else 0.01))
    return data, groups


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_tool(args, capsys=None):
    rc = la.main([str(a) for a in args])
    out = capsys.readouterr() if capsys else None
    return rc, out


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    base = tmp_path_factory.mktemp("one")
    run = base / "run_a"
    data, groups = write_run(str(run))
    out = base / "out"
    rc = la.main([str(run), "--out", str(out)])
    assert rc == 0
    return run, out, data, groups


# ---------------------------------------------------------------- (a) outputs exist

def test_every_output_file_is_produced(analysed):
    _, out, _, _ = analysed
    for name in ("sparsity.png", "sparsity.csv", "loss_acc.png", "loss_acc.csv",
                 "heatmap_s1_u1.png", "deaths.csv", "op_deaths.csv", "survivors.csv",
                 "survivors.png", "summary.txt"):
        p = out / name
        assert p.is_file() and p.stat().st_size > 0, name
    with open(out / "sparsity.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- (b) CSV numbers

def test_csv_numbers_match_hdf5(analysed):
    _, out, data, groups = analysed
    sp = read_csv(out / "sparsity.csv")
    assert [int(r["step"]) for r in sp] == list(data["step"])
    total = sum(v.shape[1] for v in groups.values())
    for r, z, m, e in zip(sp, data["zero_lambda"], data["live_macs"], data["live_edges"]):
        assert int(r["zero_lambda"]) == z
        assert int(r["total_lambda"]) == total
        assert float(r["zero_fraction"]) == pytest.approx(z / total)
        assert float(r["live_macs"]) == pytest.approx(m)
        assert int(r["live_edges"]) == e
    la_rows = read_csv(out / "loss_acc.csv")
    traj = [r for r in la_rows if r["source"] == "trajectory"]
    assert [int(r["step"]) for r in traj] == list(data["step"])
    np.testing.assert_allclose([float(r["loss"]) for r in traj], data["loss"])
    np.testing.assert_allclose([float(r["acc"]) for r in traj], data["acc"])
    met = [r for r in la_rows if r["source"] == "metrics"]
    assert [int(r["step"]) for r in met] == list(data["step"][1::2])
    assert float([r for r in met if int(r["step"]) == 40][0]["loss"]) == pytest.approx(0.123)
    # every λ entry is listed once, with its final value
    deaths = read_csv(out / "deaths.csv")
    assert len(deaths) == total
    for r in deaths:
        v = groups[r["group"]][-1, int(r["index"])]
        assert float(r["final_value"]) == pytest.approx(float(np.float32(v)))
        zero = (groups[r["group"]][:, int(r["index"])] == 0)
        assert int(r["zero_records"]) == int(zero.sum())


def _entry(deaths, group, index):
    rows = [r for r in deaths if r["group"] == group and int(r["index"]) == index]
    assert len(rows) == 1
    return rows[0]


# ---------------------------------------------------------------- (c) entry deaths

def test_entry_death_step_and_revival(analysed):
    _, out, _, _ = analysed
    deaths = read_csv(out / "deaths.csv")
    dead = _entry(deaths, "s1/u1/lambda/l3/o1", 0)
    assert dead["death_step"] == "40"
    assert dead["description"] == "l3/o1 ← input"
    revived = _entry(deaths, "s1/u1/lambda/l3/o1", idx(1, 1))
    assert revived["death_step"] == ""          # dipped to 0 at 50, alive again
    assert revived["first_zero_step"] == "50"
    assert revived["description"] == "l3/o1 ← l1/o1"
    assert _entry(deaths, "s1/u1/lambda/after", aidx(1, 2))["death_step"] == "30"
    assert _entry(deaths, "s1/u1/lambda/after", aidx(1, 2))["description"] == "after l1/o2"
    assert _entry(deaths, "s1/u1/lambda/l2/o2", idx(1, 2))["description"] == "l2/o2 ← l1/o2"
    assert _entry(deaths, "s1/red/lambda", 1)["death_step"] == "90"
    assert _entry(deaths, "s1/red/lambda", 0)["death_step"] == ""
    # an entry that is 0 from the first record dies at the first step
    assert _entry(deaths, "s1/u1/lambda/l3/o2", 0)["death_step"] == "10"


# ---------------------------------------------------------------- (d) op deaths

def test_op_deaths_follow_dead_op_rule(analysed):
    _, out, _, _ = analysed
    ops = {(r["block"], r["op"]): r for r in read_csv(out / "op_deaths.csv")}
    assert len(ops) == L * N
    assert ops[("s1/u1", "l1/o2")]["death_step"] == "60"   # no path to the output
    assert ops[("s1/u1", "l2/o2")]["death_step"] == "70"   # all inputs 0
    # its only producer died: dead although its own edge λ is still > 0
    assert ops[("s1/u1", "l3/o2")]["death_step"] == "70"
    for live in ("l1/o1", "l2/o1", "l3/o1"):
        assert ops[("s1/u1", live)]["death_step"] == ""
        assert ops[("s1/u1", live)]["alive_at_end"] == "1"
    assert ops[("s1/u1", "l3/o2")]["op_type"] == "max3"
    deaths = read_csv(out / "deaths.csv")
    assert _entry(deaths, "s1/u1/lambda/l3/o2", idx(2, 2))["death_step"] == ""
    sp = read_csv(out / "sparsity.csv")
    live = {int(r["step"]): int(r["live_ops"]) for r in sp}
    assert live[50] == 6 and live[60] == 5 and live[70] == 3 and live[100] == 3


def test_survivors_and_summary(analysed, capsys):
    run, out, _, _ = analysed
    rows = read_csv(out / "survivors.csv")
    tot = [r for r in rows if r["block"] == "all" and r["level"] == "all"]
    by_type = {r["op_type"]: (int(r["alive"]), int(r["total"])) for r in tot}
    assert by_type == {"sep3": (3, 3), "max3": (0, 3), "all": (3, 6)}
    by_level = {r["level"]: int(r["alive"]) for r in rows
                if r["block"] == "all" and r["op_type"] == "all" and r["level"] != "all"}
    assert by_level == {"1": 1, "2": 1, "3": 1}
    text = (out / "summary.txt").read_text(encoding="utf-8")
    assert "records 10, steps 10 → 100" in text
    assert "pooling share of survivors 0 %" in text
    assert "COLLAPSE WARNING" not in text


def test_collapse_warning_and_share_space(tmp_path, capsys):
    lam, after = scenario_lambda()
    after[at(80), :] = 0.0                       # block reduced to its shortcut
    write_run(str(tmp_path / "sh"), lam, after, share=True, metrics=False, red=False)
    rc, out = run_tool([tmp_path / "sh", "--out", tmp_path / "o"], capsys)
    assert rc == 0
    assert (tmp_path / "o" / "heatmap_shared.png").is_file()
    assert "COLLAPSE WARNING" in out.out
    assert "blocks reduced to their shortcut 1 of 1" in out.out
    ops = read_csv(tmp_path / "o" / "op_deaths.csv")
    assert all(r["block"] == "shared" and r["alive_at_end"] == "0" for r in ops)
    # no metrics.jsonl: trajectory only
    assert {r["source"] for r in read_csv(tmp_path / "o" / "loss_acc.csv")} == {"trajectory"}


# ---------------------------------------------------------------- (e) sweep

def test_sweep_of_two_runs(tmp_path, capsys):
    write_run(str(tmp_path / "g_small"), gamma=0.002)
    lam, after = scenario_lambda(seed=3)
    write_run(str(tmp_path / "g_big"), lam, after, gamma=0.02, metrics=False)
    rc, out = run_tool([tmp_path / "g_big", tmp_path / "g_small", "--out", tmp_path / "o",
                        "--sweep-key", "search.gamma"], capsys)
    assert rc == 0, out.err
    rows = read_csv(tmp_path / "o" / "sweep.csv")
    assert [(r["run"], float(r["gamma"])) for r in rows] == [("g_small", 0.002), ("g_big", 0.02)]
    small, big = rows
    assert float(small["final_acc"]) == pytest.approx(0.77)   # test_acc of the final record
    assert small["acc_source"] == "test_acc"
    assert float(big["final_acc"]) == pytest.approx(0.9)      # last trajectory acc
    assert big["acc_source"] == "trajectory_acc"
    assert float(small["final_live_macs"]) == pytest.approx(2.5e5)
    assert (tmp_path / "o" / "sweep.png").is_file()
    for r in ("g_small", "g_big"):
        assert (tmp_path / "o" / r / "deaths.csv").is_file()
    # bare key works the same
    rc, _ = run_tool([tmp_path / "g_big", tmp_path / "g_small", "--out", tmp_path / "o2",
                      "--sweep-key", "gamma"], capsys)
    assert rc == 0
    assert len(read_csv(tmp_path / "o2" / "sweep.csv")) == 2


# ---------------------------------------------------------------- (f) bad input

def _cli(*args):
    return subprocess.run([sys.executable, TOOL] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=60)


def test_bad_file_exit_2(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "lambda_trajectory.h5").write_text("not hdf5 at all\n")
    p = _cli(bad, "--out", tmp_path / "o")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad / "lambda_trajectory.h5") in lines[0]
    assert "Traceback" not in p.stderr

    other = tmp_path / "other"          # HDF5 but not a trajectory
    other.mkdir()
    with h5py.File(other / "lambda_trajectory.h5", "w") as f:
        f.attrs["format"] = "dsonas-model"
    p = _cli(other, "--out", tmp_path / "o")
    assert p.returncode == 2 and str(other / "lambda_trajectory.h5") in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1

    missing = tmp_path / "nowhere"
    p = _cli(missing, "--out", tmp_path / "o")
    assert p.returncode == 2 and str(missing) in p.stderr


def test_missing_sweep_key_exit_2(tmp_path, capsys):
    write_run(str(tmp_path / "a"), gamma=0.1)
    write_run(str(tmp_path / "b"), gamma=0.2)
    os.remove(tmp_path / "b" / "config.resolved.cfg")
    rc, out = run_tool([tmp_path / "a", tmp_path / "b", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and str(tmp_path / "b" / "config.resolved.cfg") in out.err


# ---------------------------------------------------------------- real binary

def test_real_trajectory_from_dsonas(tmp_path):
    binary = os.environ.get("DSONAS_BIN", os.path.join(REPO, "build", "dsonas"))
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.skip("dsonas binary not found at %s (build it or set DSONAS_BIN)" % binary)
    run = tmp_path / "real"
    cmd = [binary, "search", "--data.dataset", "synthetic", "--space.preset", "tiny",
           "--data.batch", "8", "--data.synthetic-train", "64", "--data.synthetic-test", "16",
           "--threads", "1", "--max-steps", "80", "--log-every", "10",
           "--search.gamma", "0.02", "--search.lambda-lr-mult", "5",
           "--trajectory-every", "2", "--out", str(run)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, "dsonas search failed (%d): %s" % (p.returncode, p.stderr[-2000:])
    out = tmp_path / "out"
    c = _cli(run, "--out", out)
    assert c.returncode == 0, c.stderr
    for name in ("sparsity.png", "sparsity.csv", "loss_acc.png", "loss_acc.csv",
                 "heatmap_s1_u1.png", "heatmap_s2_u1.png", "deaths.csv", "op_deaths.csv",
                 "survivors.csv", "survivors.png"):
        assert (out / name).is_file(), name
    with h5py.File(run / "lambda_trajectory.h5", "r") as f:
        steps = list(f["step"][()])
        zero = list(f["zero_lambda"][()])
        images = list(f["images"][()])
    assert images == [s * 8 for s in steps]  # 1 rank × batch 8
    sp = read_csv(out / "sparsity.csv")
    assert [int(r["step"]) for r in sp] == steps
    assert [int(r["zero_lambda"]) for r in sp] == zero
    # the §6.1 survivors computed from λ agree with the binary's own count
    final = [json.loads(l) for l in open(run / "metrics.jsonl") if '"final"' in l][-1]
    tot = [r for r in read_csv(out / "survivors.csv")
           if r["block"] == "all" and r["level"] == "all" and r["op_type"] == "all"][0]
    assert int(tot["alive"]) == final["live_ops"]
    assert "records %d" % len(steps) in c.stdout


# ---------------------------------------------------------------- /images axis

# 1 rank × 32 for steps 1..50, then 2 ranks × 32 (the step counter rescaled 50 -> 25):
# /step repeats 30, 40, 50 while /images goes on increasing
WC_STEPS = np.array([10, 20, 30, 40, 50, 30, 40, 50, 60, 70])
WC_IMAGES = np.array([320, 640, 960, 1280, 1600, 1920, 2560, 3200, 3840, 4480])


def test_images_axis_across_a_world_change(tmp_path, capsys):
    data, _ = write_run(str(tmp_path / "wc"), steps=WC_STEPS, images=WC_IMAGES)
    rc, out = run_tool([tmp_path / "wc", "--out", tmp_path / "o"], capsys)
    assert rc == 0, out.err
    sp = read_csv(tmp_path / "o" / "sparsity.csv")
    # every record, in file order (a step-keyed reading would fold the repeated steps)
    assert [int(r["step"]) for r in sp] == list(WC_STEPS)
    assert [int(r["images"]) for r in sp] == list(WC_IMAGES)
    assert [int(r["zero_lambda"]) for r in sp] == list(data["zero_lambda"])
    assert "records 10, steps 10 → 70, training images 320 → 4480" in out.out
    # metrics.jsonl is by step: not placed on the image axis across the world change
    assert {r["source"] for r in read_csv(tmp_path / "o" / "loss_acc.csv")} >= {"trajectory"}


def test_images_axis_without_a_world_change(tmp_path, capsys):
    write_run(str(tmp_path / "one"), images=STEPS * 64)
    rc, out = run_tool([tmp_path / "one", "--out", tmp_path / "o"], capsys)
    assert rc == 0, out.err
    r = la.load_run(str(tmp_path / "one"))
    assert r.xlabel == "training images" and list(r.x) == list(STEPS * 64)
    assert [int(x["images"]) for x in read_csv(tmp_path / "o" / "sparsity.csv")] == list(STEPS * 64)


def test_older_file_without_images_uses_steps(analysed, tmp_path):
    run, out, _, _ = analysed
    r = la.load_run(str(run))
    assert r.images is None and r.xlabel == "step" and list(r.x) == list(STEPS)
    assert {x["images"] for x in read_csv(out / "sparsity.csv")} == {""}
    # a file appended to by a newer version: -1 for the records before /images existed
    write_run(str(tmp_path / "mixed"), images=np.where(STEPS <= 30, -1, STEPS * 64))
    r = la.load_run(str(tmp_path / "mixed"))
    assert r.images is None and list(r.x) == list(STEPS)
