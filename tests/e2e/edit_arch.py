#!/usr/bin/python3
"""edit_arch.py IN.json OUT.json [--empty s2/u2 ...] [--branches s1/red=3x3 ...]

A variant of a derived architecture (dsonas derive's JSON) for tests: the named
normal blocks lose every op (reduced to their shortcut, `empty`), the named
reductions keep only the given branches (1x1, 3x3 or 1x1+3x3).  The derived
fields dsonas checks (survivors, macs, params) are recomputed from what was
removed, with architecture.cpp's §11.1 conventions; dsonas retrain refuses the
file if any of them is wrong, so a mistake here cannot pass unnoticed.
"""
import argparse
import json

K = {"sep3": 3, "sep5": 5}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("inp")
    p.add_argument("out")
    p.add_argument("--empty", action="append", default=[])
    p.add_argument("--branches", action="append", default=[])
    a = p.parse_args()
    arch = json.load(open(a.inp))
    ops_names = arch["space"]["ops"]
    sv = arch["survivors"]
    for name in a.empty:
        b = next(b for b in arch["blocks"] if b["name"] == name)
        F, hw = b["channels"], b["height"] * b["width"]
        branches = sum(1 for o in b["ops"] if o["output"])
        for o in b["ops"]:
            if o["type"] in K:
                k = K[o["type"]]
                arch["macs"] -= (k * k * F + F * F) * hw
                arch["params"] -= k * k * F + F * F
            arch["params"] -= 2 * F
            sv["ops"] -= 1
            sv["per_type"][o["type"]] -= 1
            sv["per_level"]["l%d" % o["level"]] -= 1
        arch["macs"] -= branches * F * F * hw
        if branches:
            arch["params"] -= branches * F * F + 2 * F
        b["ops"] = []
        b["empty"] = True
    for spec in a.branches:
        name, keep = spec.split("=")
        keep = keep.split("+")
        r = next(r for r in arch["reductions"] if r["name"] == name)
        s = int(name.split("/")[0][1:])
        nxt = next(b for b in arch["blocks"] if b["stage"] == s + 1)
        fi, fo, ohw = r["in_channels"], r["out_channels"], nxt["height"] * nxt["width"]
        for br, k in (("1x1", 1), ("3x3", 3)):
            if br in r["branches"] and br not in keep:
                arch["macs"] -= k * k * fi * fo * ohw
                arch["params"] -= k * k * fi * fo + 2 * fo
        r["branches"] = [br for br in ("1x1", "3x3") if br in keep]
    assert set(sv["per_type"]) == set(ops_names)
    arch["warnings"] = []  # dsonas recomputes the built-in ones
    with open(a.out, "w") as f:
        json.dump(arch, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
