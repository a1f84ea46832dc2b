#!/usr/bin/python3
"""Offline analysis of a dsonas λ trajectory (DIR/lambda_trajectory.h5).

Usage:
    /usr/bin/python3 utils/lambda_analysis.py RUN_DIR [RUN_DIR ...] --out OUT_DIR
                                              [--sweep-key gamma]

RUN_DIR is a dsonas search output folder (it holds lambda_trajectory.h5 and,
optionally, metrics.jsonl and config.resolved.cfg); the trajectory file itself
may be given instead. With one run the outputs go straight into OUT_DIR; with
several each run gets OUT_DIR/<run name>/ and OUT_DIR gets sweep.csv/sweep.png.

Per run:
  sparsity.csv/.png   zero-λ fraction, live MACs and live ops against step (plots:
                      against training images when the file has /images)
  loss_acc.csv/.png   loss and accuracy against step (trajectory + metrics.jsonl)
  heatmap_<block>.png every λ of each normal block (or the shared block) over time
  deaths.csv          per λ entry: the step from which it stayed exactly 0
  op_deaths.csv       per op: the step from which it stayed dead (docs/method.md §6.1)
  survivors.csv/.png  ops alive at the end per op type and per level
  summary.txt         the text summary that is also printed (incl. collapse report)

File formats: docs/checkpoint-format.md ("The λ trajectory file").
Exit codes: 0 done, 2 unusable input (missing/non-dsonas file, bad sweep key).
"""

import argparse
import configparser
import csv
import json
import math
import os
import re
import sys

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

TRAJ_NAME = "lambda_trajectory.h5"
REQUIRED = ("step", "loss", "acc", "live_macs", "zero_lambda", "live_edges")
POOL_PREFIXES = ("max", "avg")
DPI = 100


class InputError(Exception):
    """Unusable input: reported as one line, exit status 2."""


# --------------------------------------------------------------------------- loading

def _attr_str(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _attr_str(v[()])
    return str(v)


_EDGE_RE = re.compile(r"^(?P<blk>s\d+/u\d+|shared)/lambda/l(?P<l>\d+)/o(?P<j>\d+)$")
_AFTER_RE = re.compile(r"^(?P<blk>s\d+/u\d+|shared)/lambda/after$")
_RED_RE = re.compile(r"^s(?P<s>\d+)/red/lambda$")


class Block:
    """λ of one normal block (or the shared block): edge λ per op and λ_after."""

    def __init__(self, name, L, N):
        self.name = name            # "s1/u1" or "shared"
        self.L, self.N = L, N
        self.edges = {}             # (l, j) -> [n, 1+N(l-1)] float64
        self.after = None           # [n, N*L]
        self.edge_groups = {}       # (l, j) -> h5 group name
        self.after_group = None

    @property
    def tag(self):
        return self.name.replace("/", "_")


class Run:
    pass


def _natural_key(s):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def load_run(path):
    """Load one run folder (or trajectory file). Raises InputError."""
    import h5py

    if os.path.isdir(path):
        run_dir, traj = path, os.path.join(path, TRAJ_NAME)
    elif os.path.isfile(path):
        run_dir, traj = os.path.dirname(os.path.abspath(path)), path
    else:
        raise InputError("%s: no such file or directory" % path)
    if not os.path.isfile(traj):
        raise InputError("%s: no such file (not a dsonas search folder?)" % traj)
    try:
        f = h5py.File(traj, "r")
    except Exception as e:  # not HDF5, truncated, ...
        raise InputError("%s: not a dsonas trajectory file (cannot open as HDF5: %s)"
                         % (traj, str(e).splitlines()[0] if str(e) else type(e).__name__))
    r = Run()
    r.dir = run_dir
    r.traj = traj
    r.name = os.path.basename(os.path.normpath(os.path.abspath(run_dir))) or "run"
    with f:
        fmt = _attr_str(f.attrs.get("format", ""))
        if fmt != "dsonas-trajectory":
            what = ("a dsonas %s file" % fmt[len("dsonas-"):]) if fmt.startswith("dsonas-") \
                else "a dsonas file"
            raise InputError("%s: not a dsonas trajectory file (format attribute %r; this is %s%s)"
                             % (traj, fmt or None, "not " if not fmt.startswith("dsonas-") else "",
                                what))
        ver = f.attrs.get("format_version", None)
        if ver is not None and int(ver) != 1:
            raise InputError("%s: unsupported trajectory format_version %s (expected 1)" % (traj, ver))
        try:
            r.space = json.loads(_attr_str(f.attrs["space"]))
            L = int(r.space["levels"])
            ops = [str(o) for o in r.space["ops"]]
        except Exception as e:
            raise InputError("%s: missing or unreadable 'space' attribute (%s)" % (traj, e))
        missing = [k for k in REQUIRED if k not in f]
        if missing or "lambda" not in f:
            raise InputError("%s: not a complete dsonas trajectory (missing %s)"
                             % (traj, ", ".join(missing + ([] if "lambda" in f else ["lambda/"]))))
        step = np.asarray(f["step"][()], dtype=np.int64)
        n = step.shape[0]
        if n == 0:
            raise InputError("%s: trajectory has no records" % traj)
        # /images (training images so far) is the uniform axis: strictly increasing,
        # also across a world-size change, where /step jumps.  Absent from older files,
        # -1 for records written before it existed: then the step axis is used.
        images = np.asarray(f["images"][()], dtype=np.int64) if "images" in f else None
        if images is not None and images.shape[0] != n:
            raise InputError("%s: dataset images has %d records, step has %d"
                             % (traj, images.shape[0], n))
        if images is not None and (images < 0).any():
            images = None
        # Defensive: keep the last record per x value, in x order (the writer already
        # guarantees strictly increasing images and, within one world size, steps).
        key = step if images is None else images
        last = {}
        for i, s in enumerate(key):
            last[int(s)] = i
        order = np.array([last[s] for s in sorted(last)], dtype=np.int64)
        r.step = step[order]
        r.images = None if images is None else images[order]
        r.x, r.xlabel = (r.step, "step") if images is None else (r.images, "training images")
        for k in REQUIRED[1:]:
            a = np.asarray(f[k][()])
            if a.shape[0] != n:
                raise InputError("%s: dataset %s has %d records, step has %d" % (traj, k, a.shape[0], n))
            setattr(r, k, a[order].astype(np.float64))
        groups = []
        f["lambda"].visititems(lambda nm, obj: groups.append(nm)
                               if isinstance(obj, h5py.Dataset) else None)
        r.groups = {}
        for g in groups:
            a = np.asarray(f["lambda"][g][()], dtype=np.float64)
            if a.ndim == 1:
                a = a[:, None]
            if a.shape[0] != n:
                raise InputError("%s: dataset lambda/%s has %d records, step has %d"
                                 % (traj, g, a.shape[0], n))
            r.groups[g] = a[order]
    r.L, r.ops, r.N = L, ops, len(ops)
    r.share = bool(r.space.get("share", False))
    r.total_lambda = int(r.space.get("total_lambda", sum(a.shape[1] for a in r.groups.values())))
    r.n = len(r.step)
    # classify groups
    blocks, r.red = {}, {}
    for g in sorted(r.groups, key=_natural_key):
        a = r.groups[g]
        m = _EDGE_RE.match(g)
        if m:
            l, j = int(m["l"]), int(m["j"])
            b = blocks.setdefault(m["blk"], Block(m["blk"], L, r.N))
            if not (2 <= l <= L and 1 <= j <= r.N and a.shape[1] == 1 + r.N * (l - 1)):
                raise InputError("%s: λ group %s does not match the space (L=%d, N=%d, size %d)"
                                 % (traj, g, L, r.N, a.shape[1]))
            b.edges[(l, j)] = a
            b.edge_groups[(l, j)] = g
            continue
        m = _AFTER_RE.match(g)
        if m:
            b = blocks.setdefault(m["blk"], Block(m["blk"], L, r.N))
            if a.shape[1] != r.N * L:
                raise InputError("%s: λ group %s has size %d, expected N·L = %d"
                                 % (traj, g, a.shape[1], r.N * L))
            b.after, b.after_group = a, g
            continue
        m = _RED_RE.match(g)
        if m:
            r.red[g] = a
            continue
        r.red[g] = a  # unknown group: only reported in deaths.csv
    r.blocks = [blocks[k] for k in sorted(blocks, key=_natural_key)]
    for b in r.blocks:
        miss = [(l, j) for l in range(2, L + 1) for j in range(1, r.N + 1) if (l, j) not in b.edges]
        if b.after is None or miss:
            raise InputError("%s: block %s is incomplete (missing %s)"
                             % (traj, b.name, "after" if b.after is None else
                                "l%d/o%d" % miss[0]))
    if not r.blocks:
        raise InputError("%s: no normal-block λ groups under /lambda" % traj)
    r.metrics, r.final = load_metrics(os.path.join(run_dir, "metrics.jsonl"))
    r.cfg_path = os.path.join(run_dir, "config.resolved.cfg")
    return r


def load_metrics(path):
    """metrics.jsonl -> (records sorted by (stage order, step), final record or None).

    A resumed run may have logged some steps twice (lines written after its last
    checkpoint, before the interruption): the later line wins."""
    if not os.path.isfile(path):
        return [], None
    recs, final, stage_order = {}, None, {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for ln, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                o = json.loads(line)
            except ValueError:
                print("warning: %s:%d: skipping unreadable line" % (path, ln), file=sys.stderr)
                continue
            if not isinstance(o, dict):
                continue
            if o.get("event") == "final":
                final = o
                continue
            if "event" in o or "step" not in o:
                continue
            st = str(o.get("stage", ""))
            stage_order.setdefault(st, len(stage_order))
            recs[(st, int(o["step"]))] = o
    out = [recs[k] for k in sorted(recs, key=lambda k: (stage_order[k[0]], k[1]))]
    return out, final


# --------------------------------------------------------------------------- §6.1

def op_index(r, l, j):
    """Index of op (l, j) in λ_after and 1+that in edge rows."""
    return r.N * (l - 1) + (j - 1)


def dead_op_rule(b):
    """docs/method.md §6.1, vectorised over records.

    Returns (alive, after_clean): alive[(l, j)] bool [n]; after_clean [n, N·L]."""
    L, N = b.L, b.N
    after = b.after.copy()
    lam = {k: v.copy() for k, v in b.edges.items()}
    need = {}
    for l in range(1, L + 1):
        for j in range(1, N + 1):
            need[(l, j)] = after[:, N * (l - 1) + (j - 1)].copy()
    # pass 1 (backward)
    for l in range(L, 1, -1):
        for j in range(1, N + 1):
            row = lam[(l, j)]
            nd = need[(l, j)]
            nd[row.sum(axis=1) == 0] = 0
            on = nd > 0
            for lp in range(1, l):
                for jp in range(1, N + 1):
                    need[(lp, jp)] += np.where(on, row[:, 1 + N * (lp - 1) + (jp - 1)], 0.0)
    # pass 2 (forward)
    alive = {}
    for l in range(1, L + 1):
        for j in range(1, N + 1):
            nd = need[(l, j)]
            if l > 1:
                nd[lam[(l, j)].sum(axis=1) == 0] = 0
            dead = nd == 0
            k = N * (l - 1) + (j - 1)
            after[dead, k] = 0
            for m in range(l + 1, L + 1):
                for q in range(1, N + 1):
                    lam[(m, q)][dead, 1 + k] = 0
            if l > 1:
                lam[(l, j)][dead, :] = 0
            alive[(l, j)] = ~dead
    return alive, after


def death_index(dead):
    """dead: bool [n]. Index from which it stays True to the end, or None."""
    if dead.size == 0 or not dead[-1]:
        return None
    alive_idx = np.flatnonzero(~dead)
    return 0 if alive_idx.size == 0 else int(alive_idx[-1]) + 1


# --------------------------------------------------------------------------- analysis

def op_label(l, j):
    return "l%d/o%d" % (l, j)


def is_pool(opname):
    return opname.lower().startswith(POOL_PREFIXES)


def analyse(r):
    a = {}
    r.alive, r.after_clean = {}, {}
    for b in r.blocks:
        r.alive[b.name], r.after_clean[b.name] = dead_op_rule(b)
    # live ops per record (share: the shared topology once)
    live_ops = np.zeros(r.n, dtype=np.int64)
    for b in r.blocks:
        for v in r.alive[b.name].values():
            live_ops += v.astype(np.int64)
    a["live_ops"] = live_ops
    # survivors at the end
    surv = []  # (block, l, j, opname, alive, feeds_output)
    for b in r.blocks:
        for l in range(1, r.L + 1):
            for j in range(1, r.N + 1):
                al = bool(r.alive[b.name][(l, j)][-1])
                fo = bool(r.after_clean[b.name][-1, op_index(r, l, j)] > 0)
                surv.append((b.name, l, j, r.ops[j - 1], al, fo))
    a["surv"] = surv
    alive_ops = [s for s in surv if s[4]]
    n_alive = len(alive_ops)
    a["n_alive"] = n_alive
    a["n_ops"] = len(surv)
    a["alive_per_type"] = {o: sum(1 for s in alive_ops if s[3] == o) for o in r.ops}
    a["alive_per_level"] = {l: sum(1 for s in alive_ops if s[1] == l) for l in range(1, r.L + 1)}
    n_pool = sum(1 for s in alive_ops if is_pool(s[3]))
    a["pool_share"] = (n_pool / n_alive) if n_alive else float("nan")
    a["shortcut_blocks"] = [b.name for b in r.blocks if not np.any(r.after_clean[b.name][-1] > 0)]
    a["n_level1"] = a["alive_per_level"].get(1, 0)
    a["level1_only_blocks"] = [
        b.name for b in r.blocks
        if any(s[4] for s in surv if s[0] == b.name)
        and all(s[1] == 1 for s in surv if s[0] == b.name and s[4])]
    a["collapse"] = (n_alive > 0 and a["pool_share"] > 0.6) or bool(a["shortcut_blocks"])
    return a


def entry_rows(r):
    """Every λ entry: (group, index, block, description, series[n])."""
    rows = []
    for b in r.blocks:
        for l in range(2, r.L + 1):
            for j in range(1, r.N + 1):
                g = b.edge_groups[(l, j)]
                arr = b.edges[(l, j)]
                for i in range(arr.shape[1]):
                    if i == 0:
                        src, srcop = "input", "input"
                    else:
                        lp, jp = (i - 1) // r.N + 1, (i - 1) % r.N + 1
                        src, srcop = op_label(lp, jp), r.ops[jp - 1]
                    desc = "%s ← %s" % (op_label(l, j), src)
                    rows.append((g, i, b.name, desc, "%s ← %s" % (r.ops[j - 1], srcop), arr[:, i]))
        for k in range(r.N * r.L):
            l, j = k // r.N + 1, k % r.N + 1
            rows.append((b.after_group, k, b.name, "after %s" % op_label(l, j),
                         "%s → output" % r.ops[j - 1], b.after[:, k]))
    for g in sorted(r.red, key=_natural_key):
        arr = r.red[g]
        m = _RED_RE.match(g)
        for i in range(arr.shape[1]):
            if m and arr.shape[1] == 2:
                desc = "red s%s branch %d (%s)" % (m["s"], i, "1x1" if i == 0 else "3x3")
                kind = "reduction"
            else:
                desc, kind = "%s[%d]" % (g, i), "other"
            rows.append((g, i, g.rsplit("/", 2)[0] if m else "", desc, kind, arr[:, i]))
    return rows


# --------------------------------------------------------------------------- output helpers

def fmt_num(x):
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return repr(float(x))


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow([fmt_num(v) if isinstance(v, (float, np.floating, int, np.integer))
                        and not isinstance(v, bool) else v for v in row])


def style_axes(ax):
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=9)


def savefig(fig, path):
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# --------------------------------------------------------------------------- per-run outputs

def out_sparsity(r, a, od):
    zf = r.zero_lambda / max(r.total_lambda, 1)
    rows = [(int(r.step[i]), int(r.zero_lambda[i]), r.total_lambda, float(zf[i]),
             float(r.live_macs[i]), int(r.live_edges[i]), int(a["live_ops"][i]),
             "" if r.images is None else int(r.images[i]))
            for i in range(r.n)]
    write_csv(os.path.join(od, "sparsity.csv"),
              ["step", "zero_lambda", "total_lambda", "zero_fraction", "live_macs",
               "live_edges", "live_ops", "images"], rows)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True)
    mk = "o" if r.n <= 60 else None
    ax1.plot(r.x, 100 * zf, color="tab:red", marker=mk, ms=3, label="zero λ")
    ax1.set_ylabel("zero λ [%% of %d]" % r.total_lambda)
    ax1.set_ylim(-3, 103)
    ax1.set_title("%s: sparsity during search" % r.name, fontsize=11)
    ax1b = ax1.twinx()
    ax1b.plot(r.x, a["live_ops"], color="tab:gray", ls="--", lw=1, label="live ops (§6.1)")
    ax1b.set_ylabel("live ops [count]", color="tab:gray")
    ax1b.set_ylim(bottom=0)
    ax1b.tick_params(labelsize=9, colors="tab:gray", axis="y")
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax1b.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    style_axes(ax1)
    ax2.plot(r.x, r.live_macs / 1e6, color="tab:blue", marker=mk, ms=3, label="live MACs")
    ax2.set_ylabel("live MACs [M per image]")
    ax2.set_xlabel(r.xlabel)
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=8, loc="upper right")
    style_axes(ax2)
    fig.tight_layout()
    savefig(fig, os.path.join(od, "sparsity.png"))


def out_loss_acc(r, od):
    rows = [("trajectory", "search", int(r.step[i]), float(r.loss[i]), float(r.acc[i]))
            for i in range(r.n)]
    mrows = [m for m in r.metrics if "loss" in m or "acc" in m]
    for m in mrows:
        rows.append(("metrics", m.get("stage", ""), int(m["step"]),
                     float(m.get("loss", float("nan"))), float(m.get("acc", float("nan")))))
    write_csv(os.path.join(od, "loss_acc.csv"), ["source", "stage", "step", "loss", "acc"], rows)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True)
    ax1.plot(r.x, r.loss, color="tab:blue", lw=0.8, alpha=0.6, label="batch (trajectory)")
    ax2.plot(r.x, 100 * r.acc, color="tab:blue", lw=0.8, alpha=0.6, label="batch (trajectory)")
    ms = [m for m in mrows if m.get("stage", "search") == "search"]
    if r.images is not None and not (r.images * r.step[0] == r.images[0] * r.step).all():
        ms = []  # metrics.jsonl is by step: images ∝ step only without a world-size change
    if ms:
        st = [int(m["step"]) for m in ms]
        if r.images is not None:
            st = [s * int(r.images[0]) // int(r.step[0]) for s in st]
        ax1.plot(st, [m.get("loss", np.nan) for m in ms], "o-", color="tab:orange", ms=4,
                 label="log window (metrics.jsonl)")
        ax2.plot(st, [100 * m.get("acc", np.nan) for m in ms], "o-", color="tab:orange", ms=4,
                 label="log window (metrics.jsonl)")
    if r.final:
        for key, col, ls in (("val_acc", "tab:green", ":"), ("test_acc", "tab:purple", "--")):
            if key in r.final:
                ax2.axhline(100 * r.final[key], color=col, ls=ls, lw=1.2,
                            label="final %s %.1f %%" % (key.replace("_acc", ""), 100 * r.final[key]))
    ax1.set_ylabel("loss [cross-entropy]")
    ax1.set_title("%s: training loss and accuracy" % r.name, fontsize=11)
    ax2.set_ylabel("accuracy [%]")
    ax2.set_xlabel(r.xlabel)
    ax2.set_ylim(-3, 103)
    ax1.legend(fontsize=8, loc="upper right")
    ax2.legend(fontsize=8, loc="lower right")
    style_axes(ax1)
    style_axes(ax2)
    fig.tight_layout()
    savefig(fig, os.path.join(od, "loss_acc.png"))


def _edges(step):
    s = step.astype(np.float64)
    if len(s) == 1:
        return np.array([s[0] - 0.5, s[0] + 0.5])
    mid = (s[1:] + s[:-1]) / 2
    return np.concatenate([[s[0] - (mid[0] - s[0])], mid, [s[-1] + (s[-1] - mid[-1])]])


def out_heatmaps(r, od):
    names = []
    for b in r.blocks:
        rows, groups = [], []  # groups: (label, start, end)
        for l in range(2, r.L + 1):
            for j in range(1, r.N + 1):
                arr = b.edges[(l, j)]
                src = "in,l1" if l == 2 else "in,l1..l%d" % (l - 1)
                groups.append(("%s %s ← %s" % (op_label(l, j), r.ops[j - 1], src),
                               len(rows), len(rows) + arr.shape[1]))
                rows.extend(arr.T)
        for l in range(1, r.L + 1):
            groups.append(("after l%d (o1..o%d)" % (l, r.N), len(rows), len(rows) + r.N))
            rows.extend(b.after[:, r.N * (l - 1): r.N * l].T)
        M = np.array(rows)  # [R, n]
        R = M.shape[0]
        pos = M[M > 0]
        vmax = float(pos.max()) if pos.size else 1.0
        vmin = max(float(pos.min()) if pos.size else vmax / 1e3, vmax / 1e4)
        if vmin >= vmax:
            vmin = vmax / 10
        cmap = plt.get_cmap("viridis").copy()
        cmap.set_bad("white")
        cmap.set_under(cmap(0.0))
        h = min(max(4.5, 0.06 * R + 1.8), 12)
        fig, ax = plt.subplots(figsize=(6.4, h))
        mesh = ax.pcolormesh(_edges(r.x), np.arange(R + 1), np.ma.masked_where(M <= 0, M),
                             cmap=cmap, norm=LogNorm(vmin=vmin, vmax=vmax), shading="flat")
        ax.set_ylim(R, 0)
        for _, s0, _e in groups[1:]:
            ax.axhline(s0, color="0.55", lw=0.5)
        n_edge_groups = (r.L - 1) * r.N
        if n_edge_groups < len(groups):
            ax.axhline(groups[n_edge_groups][1], color="black", lw=1.2)
        ax.set_yticks([(s0 + e) / 2 for _, s0, e in groups])
        ax.set_yticklabels([g[0] for g in groups], fontsize=7 if len(groups) > 14 else 8)
        ax.set_yticks(np.arange(R) + 0.5, minor=True)
        ax.tick_params(axis="y", which="minor", length=1.5)
        ax.tick_params(axis="y", which="major", length=0)
        ax.set_xlabel(r.xlabel)
        title = "shared block (all normal blocks)" if b.name == "shared" else "block %s" % b.name
        ax.set_title("%s: λ of %s\n%d entries × %d records" % (r.name, title, R, r.n), fontsize=10)
        cb = fig.colorbar(mesh, ax=ax, pad=0.02, fraction=0.05, aspect=max(20, 3 * h),
                          extend="min")
        cb.set_label("λ value (log scale); white = exactly 0", fontsize=9)
        cb.ax.tick_params(labelsize=8)
        fig.text(0.01, 0.005, "rows of an input group: block input, then l1/o1..o%d, l2/o1.. "
                 "(%s)" % (r.N, ", ".join("o%d=%s" % (j + 1, o) for j, o in enumerate(r.ops))),
                 ha="left", va="bottom", fontsize=7, color="0.3")
        fig.tight_layout(rect=(0, 0.025 * 6 / h, 1, 1))
        fn = "heatmap_%s.png" % b.tag
        savefig(fig, os.path.join(od, fn))
        names.append(fn)
    return names


def out_deaths(r, od):
    rows = []
    for g, i, blk, desc, kinds, x in entry_rows(r):
        zero = x == 0
        di = death_index(zero)
        fz = np.flatnonzero(zero)
        rows.append((g, i, blk, desc, kinds,
                     "" if di is None else int(r.step[di]),
                     "" if fz.size == 0 else int(r.step[fz[0]]),
                     int(zero.sum()), float(x[-1])))
    write_csv(os.path.join(od, "deaths.csv"),
              ["group", "index", "block", "description", "ops", "death_step",
               "first_zero_step", "zero_records", "final_value"], rows)
    orows = []
    for b in r.blocks:
        for l in range(1, r.L + 1):
            for j in range(1, r.N + 1):
                al = r.alive[b.name][(l, j)]
                di = death_index(~al)
                orows.append((b.name, op_label(l, j), l, j, r.ops[j - 1],
                              "" if di is None else int(r.step[di]),
                              int(bool(al[-1])),
                              int(r.after_clean[b.name][-1, op_index(r, l, j)] > 0),
                              int((~al).sum())))
    write_csv(os.path.join(od, "op_deaths.csv"),
              ["block", "op", "level", "op_index", "op_type", "death_step", "alive_at_end",
               "feeds_output_at_end", "dead_records"], orows)
    return rows, orows


def out_survivors(r, a, od):
    surv = a["surv"]
    rows = []
    for b in r.blocks:
        for s in surv:
            if s[0] == b.name:
                rows.append((b.name, s[1], s[3], int(s[4]), 1))
    for l in range(1, r.L + 1):
        for o in r.ops:
            sel = [s for s in surv if s[1] == l and s[3] == o]
            rows.append(("all", l, o, sum(s[4] for s in sel), len(sel)))
    for o in r.ops:
        sel = [s for s in surv if s[3] == o]
        rows.append(("all", "all", o, sum(s[4] for s in sel), len(sel)))
    for l in range(1, r.L + 1):
        sel = [s for s in surv if s[1] == l]
        rows.append(("all", l, "all", sum(s[4] for s in sel), len(sel)))
    for b in r.blocks:
        sel = [s for s in surv if s[0] == b.name]
        rows.append((b.name, "all", "all", sum(s[4] for s in sel), len(sel)))
    rows.append(("all", "all", "all", a["n_alive"], a["n_ops"]))
    write_csv(os.path.join(od, "survivors.csv"), ["block", "level", "op_type", "alive", "total"],
              rows)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6.4, 3.8))
    tot_t = [sum(1 for s in surv if s[3] == o) for o in r.ops]
    al_t = [a["alive_per_type"][o] for o in r.ops]
    cols = ["tab:orange" if is_pool(o) else "tab:blue" for o in r.ops]
    x = np.arange(len(r.ops))
    ax1.bar(x, tot_t, color="0.88", edgecolor="0.6", label="candidates")
    ax1.bar(x, al_t, color=cols, label="alive")
    for xi, v in zip(x, al_t):
        ax1.text(xi, v, str(v), ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(x)
    ax1.set_xticklabels(r.ops, fontsize=9)
    ax1.set_xlabel("op type")
    ax1.set_ylabel("ops [count]")
    ax1.set_title("per op type", fontsize=10)
    fig.legend(handles=[Patch(color="tab:blue", label="alive conv op"),
                        Patch(color="tab:orange", label="alive pooling op"),
                        Patch(color="tab:green", label="alive (any type)"),
                        Patch(facecolor="0.88", edgecolor="0.6", label="candidates")],
               fontsize=8, loc="lower center", ncol=4, frameon=False)
    levels = list(range(1, r.L + 1))
    tot_l = [sum(1 for s in surv if s[1] == l) for l in levels]
    al_l = [a["alive_per_level"][l] for l in levels]
    ax2.bar(levels, tot_l, color="0.88", edgecolor="0.6")
    ax2.bar(levels, al_l, color="tab:green")
    for xi, v in zip(levels, al_l):
        ax2.text(xi, v, str(v), ha="center", va="bottom", fontsize=8)
    ax2.set_xticks(levels)
    ax2.set_xlabel("level")
    ax2.set_ylabel("ops [count]")
    ax2.set_title("per level", fontsize=10)
    for ax, t in ((ax1, tot_t), (ax2, tot_l)):
        ax.set_ylim(0, max(t + [1]) * 1.15)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, axis="y", alpha=0.3)
    share = " (shared topology)" if r.share else ""
    fig.suptitle("%s: surviving ops at step %d%s — %d of %d"
                 % (r.name, int(r.step[-1]), share, a["n_alive"], a["n_ops"]), fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    savefig(fig, os.path.join(od, "survivors.png"))


def summary_text(r, a):
    zf0 = r.zero_lambda[0] / max(r.total_lambda, 1)
    zf = r.zero_lambda[-1] / max(r.total_lambda, 1)
    lines = []
    lines.append("run %s  (%s)" % (r.name, r.traj))
    sp = r.space
    lines.append("  space: L=%d, ops %s, normal units %s, widths %s, %s, %d λ"
                 % (r.L, ",".join(r.ops), sp.get("normal_units"), sp.get("widths"),
                    "share" if r.share else "full", r.total_lambda))
    lines.append("  records %d, steps %d → %d%s" % (
        r.n, int(r.step[0]), int(r.step[-1]),
        "" if r.images is None else ", training images %d → %d" % (r.images[0], r.images[-1])))
    lines.append("  zero λ: %d/%d (%.1f %%) at first record → %d/%d (%.1f %%) at the end"
                 % (r.zero_lambda[0], r.total_lambda, 100 * zf0, r.zero_lambda[-1],
                    r.total_lambda, 100 * zf))
    lm0, lm1 = r.live_macs[0], r.live_macs[-1]
    lines.append("  live MACs: %.4g M → %.4g M (%.1f %% of the first record)"
                 % (lm0 / 1e6, lm1 / 1e6, 100 * lm1 / lm0 if lm0 else float("nan")))
    if r.final:
        parts = ["%s %.4f" % (k, r.final[k]) for k in ("val_acc", "test_acc") if k in r.final]
        if "live_macs" in r.final:
            parts.append("live MACs %.4g M" % (r.final["live_macs"] / 1e6))
        lines.append("  final (metrics.jsonl): " + ", ".join(parts))
    nb = sum(int(u) for u in sp.get("normal_units", []) or [])
    shared = (" (shared topology, used by %d normal blocks: %d ops in the network)"
              % (nb, nb * a["n_alive"])) if r.share and nb else ""
    lines.append("  ops alive: %d of %d%s — %s" % (
        a["n_alive"], a["n_ops"], shared,
        " ".join("%s=%d" % (o, a["alive_per_type"][o]) for o in r.ops)))
    lines.append("  per level: " + " ".join("l%d=%d" % (l, v) for l, v in a["alive_per_level"].items()))
    ps = a["pool_share"]
    lines.append("  collapse report: pooling share of survivors %s; blocks reduced to their "
                 "shortcut %d of %d%s; surviving level-1 ops %d of %d alive; blocks with "
                 "level-1-only survivors %d"
                 % ("n/a (no survivors)" if math.isnan(ps) else "%.0f %%" % (100 * ps),
                    len(a["shortcut_blocks"]), len(r.blocks),
                    (" (" + ", ".join(a["shortcut_blocks"]) + ")") if a["shortcut_blocks"] else "",
                    a["n_level1"], a["n_alive"], len(a["level1_only_blocks"])))
    if a["collapse"]:
        why = []
        if a["n_alive"] and ps > 0.6:
            why.append("pooling share %.0f %% > 60 %%" % (100 * ps))
        if a["shortcut_blocks"]:
            why.append("%d block(s) reduced to the shortcut" % len(a["shortcut_blocks"]))
        lines.append("  COLLAPSE WARNING: " + "; ".join(why))
    return "\n".join(lines)


def analyse_run(r, od):
    os.makedirs(od, exist_ok=True)
    a = analyse(r)
    out_sparsity(r, a, od)
    out_loss_acc(r, od)
    out_heatmaps(r, od)
    out_deaths(r, od)
    out_survivors(r, a, od)
    text = summary_text(r, a)
    with open(os.path.join(od, "summary.txt"), "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    return a, text


# --------------------------------------------------------------------------- sweep

def read_cfg_value(path, key):
    if not os.path.isfile(path):
        raise InputError("%s: no such file (needed for the sweep key %r)" % (path, key))
    cp = configparser.ConfigParser(interpolation=None, strict=False,
                                   inline_comment_prefixes=("#", ";"))
    try:
        with open(path, encoding="utf-8") as fh:
            cp.read_string("[__root__]\n" + fh.read(), source=path)
    except configparser.Error as e:
        raise InputError("%s: unreadable INI file (%s)" % (path, str(e).splitlines()[0]))
    if "." in key:
        sec, k = key.rsplit(".", 1)
        if cp.has_option(sec, k):
            return cp.get(sec, k)
        raise InputError("%s: no key %r in section [%s]" % (path, k, sec))
    if cp.has_option("__root__", key):
        return cp.get("__root__", key)
    hits = [s for s in cp.sections() if s != "__root__" and cp.has_option(s, key)]
    if len(hits) == 1:
        return cp.get(hits[0], key)
    if not hits:
        raise InputError("%s: no key %r in any section" % (path, key))
    raise InputError("%s: key %r is ambiguous (sections %s); use SECTION.%s"
                     % (path, key, ", ".join(hits), key))


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def out_sweep(runs, key, od):
    rows = []
    for r in runs:
        v = r.sweep_value
        fin = r.final or {}
        lm = float(fin["live_macs"]) if "live_macs" in fin else float(r.live_macs[-1])
        if "test_acc" in fin:
            acc, src = float(fin["test_acc"]), "test_acc"
        else:
            acc, src = float(r.acc[-1]), "trajectory_acc"
        rows.append(dict(run=r.name, dir=r.dir, value=v, live_macs=lm, acc=acc, acc_source=src,
                         val_acc=fin.get("val_acc", float("nan")),
                         zero_fraction=float(r.zero_lambda[-1]) / max(r.total_lambda, 1),
                         live_ops=int(r._analysis["n_alive"]), final_step=int(r.step[-1])))
    numeric = all(_num(d["value"]) is not None for d in rows)
    if numeric:
        rows.sort(key=lambda d: _num(d["value"]))
    kname = key.rsplit(".", 1)[-1]
    write_csv(os.path.join(od, "sweep.csv"),
              ["run", kname, "final_live_macs", "final_acc", "acc_source", "val_acc",
               "zero_fraction", "live_ops", "final_step", "run_dir"],
              [(d["run"], d["value"], d["live_macs"], d["acc"], d["acc_source"],
                float(d["val_acc"]), d["zero_fraction"], d["live_ops"], d["final_step"], d["dir"])
               for d in rows])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True)
    if numeric:
        xs = [_num(d["value"]) for d in rows]
        if all(x > 0 for x in xs) and max(xs) / min(xs) >= 20:
            ax1.set_xscale("log")
    else:
        xs = list(range(len(rows)))
        ax2.set_xticks(xs)
        ax2.set_xticklabels([d["value"] for d in rows], fontsize=8, rotation=20)
    ax1.plot(xs, [d["live_macs"] / 1e6 for d in rows], "o-", color="tab:blue", label="final live MACs")
    srcs = sorted(set(d["acc_source"] for d in rows))
    ax2.plot(xs, [100 * d["acc"] for d in rows], "s-", color="tab:green",
             label="final accuracy (%s)" % "/".join(s.replace("_", " ") for s in srcs))
    if any(not math.isnan(float(d["val_acc"])) for d in rows):
        ax2.plot(xs, [100 * float(d["val_acc"]) for d in rows], "^:", color="tab:olive",
                 label="final val accuracy")
    if len(rows) <= 8:
        for x, d in zip(xs, rows):
            ax1.annotate(d["run"], (x, d["live_macs"] / 1e6), textcoords="offset points",
                         xytext=(4, 4), fontsize=7, color="0.3")
    ax1.set_ylabel("live MACs [M per image]")
    ax1.set_ylim(bottom=0)
    ax1.set_title("sweep over %s: %d runs" % (key, len(rows)), fontsize=11)
    ax2.set_ylabel("accuracy [%]")
    ax2.set_ylim(-3, 103)
    ax2.set_xlabel(key + ("" if numeric else " (categorical)"))
    for ax in (ax1, ax2):
        ax.margins(x=0.1)
        ax.legend(fontsize=8, loc="best")
        style_axes(ax)
    fig.tight_layout()
    savefig(fig, os.path.join(od, "sweep.png"))
    return rows


# --------------------------------------------------------------------------- main

def unique_names(runs):
    seen = {}
    for r in runs:
        base = r.name
        if base in seen:
            seen[base] += 1
            r.name = "%s_%d" % (base, seen[base])
        else:
            seen[base] = 1


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Analyse dsonas λ trajectories (DIR/lambda_trajectory.h5): sparsity, "
                    "loss/accuracy, λ heat maps, death steps, survivors, collapse report, sweeps.")
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR",
                    help="dsonas search output folder(s) (or their lambda_trajectory.h5)")
    ap.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder")
    ap.add_argument("--sweep-key", default="gamma",
                    help="config key that varies across the runs (KEY or SECTION.KEY in "
                         "config.resolved.cfg; default gamma)")
    args = ap.parse_args(argv)
    try:
        runs = [load_run(p) for p in args.runs]
        unique_names(runs)
        os.makedirs(args.out, exist_ok=True)
        several = len(runs) > 1
        if several:  # check the sweep key before any work
            for r in runs:
                r.sweep_value = read_cfg_value(r.cfg_path, args.sweep_key)
        for r in runs:
            od = os.path.join(args.out, r.name) if several else args.out
            a, text = analyse_run(r, od)
            r._analysis = a
            print(text)
            print("  outputs in %s" % od)
        if several:
            rows = out_sweep(runs, args.sweep_key, args.out)
            print("sweep over %s (%d runs): %s" % (args.sweep_key, len(rows), "; ".join(
                "%s=%s: %.4g M MACs, acc %.3f" % (d["run"], d["value"], d["live_macs"] / 1e6, d["acc"])
                for d in rows)))
            print("  outputs in %s (sweep.csv, sweep.png)" % args.out)
    except InputError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
