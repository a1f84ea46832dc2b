"""The statistics of `dsonas study --study.report` against SciPy (python3-scipy),
computed here from the same values: per group mean, sd, 95 % interval (Student's t),
Welch's t-test (t, df, two-sided p, interval of the difference) and Hedges' g, for
found vs random and found vs hand-made; the checks (random architectures as the units,
one-way ANOVA among them, the pooled within-architecture sd); study.csv lists every
retrain; and looks.jsonl counts the reports over different sets of finished retrains.

The study folder is made here: DIR/plan.json and one eval_test/eval.json per retrain
task with chosen accuracies, as finished retrains leave them (run: /usr/bin/python3 -m
pytest -q tests/python; needs the dsonas binary, DSONAS_BIN or <repo>/build/dsonas)."""

import csv
import json
import os
import subprocess

import numpy as np
import pytest
from scipy import stats

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("DSONAS_BIN", os.path.join(REPO, "build", "dsonas"))
SYN = ["--data.dataset", "synthetic", "--space.preset", "tiny", "--progress", "false"]

# top-1 (fraction) per architecture, seeds 1..3 (R = 1 search, K = 2 random, S = 3)
TOP1 = {
    "found": [0.9391, 0.9359, 0.9379],
    "baseline": [0.9372, 0.9349, 0.9340],
    "random_001": [0.9301, 0.9322, 0.9288],
    "random_002": [0.9355, 0.9310, 0.9334],
}


def make_study(d):
    os.makedirs(d)
    tasks = []
    for s in (1, 2, 3):
        for a in TOP1:
            g = "found" if a == "found" else "baseline" if a == "baseline" else "random"
            name = "%s_s%d" % (a, s)
            tasks.append({"name": name, "group": g, "arch": a, "seed": s})
            e = os.path.join(d, "retrain", name, "eval_test")
            os.makedirs(e)
            with open(os.path.join(e, "eval.json"), "w") as f:
                json.dump({"top1": TOP1[a][s - 1], "top5": 0.999, "macs": 27754240 + 1000 * len(a),
                           "params": 238906}, f)
    with open(os.path.join(d, "plan.json"), "w") as f:
        json.dump({"format": "dsonas-study-plan", "format_version": 1, "target_macs": 27754240, "tasks": tasks}, f)


@pytest.mark.skipif(not os.path.exists(BIN), reason="the dsonas binary is not built (DSONAS_BIN)")
def test_report_statistics_match_scipy(tmp_path):
    d = str(tmp_path / "study")
    make_study(d)
    r = subprocess.run([BIN, "study"] + SYN + ["--study.random", "2", "--study.seeds", "3", "--study.report",
                                               "--out", d], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = json.load(open(os.path.join(d, "study.json")))
    found = [100 * v for v in TOP1["found"]]
    base = [100 * v for v in TOP1["baseline"]]
    rand = [100 * v for k in ("random_001", "random_002") for v in TOP1[k]]
    for g, v in (("found", found), ("baseline", base), ("random", rand)):
        st = s["groups"][g]
        assert st["n"] == len(v)
        assert st["mean"] == pytest.approx(np.mean(v), abs=1e-6)
        assert st["sd"] == pytest.approx(np.std(v, ddof=1), abs=1e-6)
        h = stats.t.ppf(0.975, len(v) - 1) * np.std(v, ddof=1) / np.sqrt(len(v))
        assert st["ci95"] == pytest.approx([np.mean(v) - h, np.mean(v) + h], abs=1e-6)
    for key, other in (("found_vs_random", rand), ("found_vs_baseline", base)):
        t = s["tests"][key]
        ref = stats.ttest_ind(found, other, equal_var=False)
        va, vb, na, nb = np.var(found, ddof=1), np.var(other, ddof=1), len(found), len(other)
        se2 = va / na + vb / nb
        df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
        diff = np.mean(found) - np.mean(other)
        h = stats.t.ppf(0.975, df) * np.sqrt(se2)
        pooled = np.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
        g = (1 - 3 / (4 * (na + nb) - 9)) * diff / pooled
        assert t["valid"]
        assert t["t"] == pytest.approx(ref.statistic, abs=1e-5)
        assert t["p"] == pytest.approx(ref.pvalue, rel=1e-4)
        assert t["df"] == pytest.approx(df, abs=1e-5)
        assert t["diff"] == pytest.approx(diff, abs=1e-6)
        assert t["ci95"] == pytest.approx([diff - h, diff + h], abs=1e-5)
        assert t["hedges_g"] == pytest.approx(g, abs=1e-5)
    md = open(os.path.join(d, "study.md")).read()
    p = stats.ttest_ind(found, rand, equal_var=False).pvalue
    assert ("significant, p < 0.05" in md.split("found vs random")[1].split("\n")[0]) == (p < 0.05)
    rows = list(csv.DictReader(open(os.path.join(d, "study.csv"))))
    assert len(rows) == 12 and all(row["done"] == "1" for row in rows)
    assert sorted(float(row["top1"]) for row in rows if row["group"] == "random") == sorted(round(v, 2) for v in rand)


@pytest.mark.skipif(not os.path.exists(BIN), reason="the dsonas binary is not built (DSONAS_BIN)")
def test_unfinished_study_says_so(tmp_path):
    d = str(tmp_path / "study")
    make_study(d)
    os.remove(os.path.join(d, "retrain", "random_002_s3", "eval_test", "eval.json"))
    r = subprocess.run([BIN, "study"] + SYN + ["--study.random", "2", "--study.seeds", "3", "--study.report",
                                               "--out", d], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = json.load(open(os.path.join(d, "study.json")))
    assert s["tasks_done"] == 11 and s["groups"]["random"]["n"] == 5
    assert "the study is not finished" in open(os.path.join(d, "study.md")).read()


def report(d, seeds=3):
    r = subprocess.run([BIN, "study"] + SYN + ["--study.random", "2", "--study.seeds", str(seeds), "--study.report",
                                               "--out", d], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.load(open(os.path.join(d, "study.json"))), open(os.path.join(d, "study.md")).read()


@pytest.mark.skipif(not os.path.exists(BIN), reason="the dsonas binary is not built (DSONAS_BIN)")
def test_checks_match_scipy(tmp_path):
    d = str(tmp_path / "study")
    make_study(d)
    s, md = report(d)
    c = s["checks"]
    found = [100 * v for v in TOP1["found"]]
    rmeans = [100 * np.mean(TOP1[k]) for k in ("random_001", "random_002")]
    ref = stats.ttest_ind(found, rmeans, equal_var=False)
    t = c["found_vs_random_architectures"]
    assert t["valid"] and c["found_units"] == 3 and c["random_units"] == 2
    assert t["t"] == pytest.approx(ref.statistic, abs=1e-5)
    assert t["p"] == pytest.approx(ref.pvalue, rel=1e-4)
    an = stats.f_oneway(*[[100 * v for v in TOP1[k]] for k in ("random_001", "random_002")])
    assert c["random_anova"]["valid"]
    assert c["random_anova"]["F"] == pytest.approx(an.statistic, rel=1e-5)
    assert c["random_anova"]["p"] == pytest.approx(an.pvalue, rel=1e-4)
    assert (c["random_anova"]["df_between"], c["random_anova"]["df_within"]) == (1, 4)
    groups = [[100 * v for v in vals] for vals in TOP1.values()]
    ss = sum(((np.array(g) - np.mean(g)) ** 2).sum() for g in groups)
    assert c["within_architecture_df"] == 8 and c["architectures"] == 4
    assert c["within_architecture_sd"] == pytest.approx(np.sqrt(ss / 8), abs=1e-5)
    assert "## Checks" in md and "Random architectures as the units" in md
    assert ("p = %.4f (significant)" % ref.pvalue in md) == (ref.pvalue < 0.05)


@pytest.mark.skipif(not os.path.exists(BIN), reason="the dsonas binary is not built (DSONAS_BIN)")
def test_looks_are_counted(tmp_path):
    d = str(tmp_path / "study")
    make_study(d)
    gone = os.path.join(d, "retrain", "random_002_s3", "eval_test", "eval.json")
    keep = open(gone).read()
    os.remove(gone)
    s, md = report(d)  # 11 of 12: look 1
    assert len(s["looks"]) == 1 and s["looks"][0]["retrains"] == 11
    assert "This is the only report" in md
    s, md = report(d)  # the same retrains again: not a new look
    assert len(s["looks"]) == 1
    with open(gone, "w") as f:
        f.write(keep)
    s, md = report(d)  # all 12: look 2
    assert [k["retrains"] for k in s["looks"]] == [11, 12]
    assert s["looks"][1]["p_random"] == pytest.approx(s["tests"]["found_vs_random"]["p"], rel=1e-5)
    assert "This is look 2 at this study" in md and "not corrected for repeated looks" in md
    s, md = report(d, seeds=2)  # fewer seeds read: another set of retrains, look 3
    assert [(k["retrains"], k["tasks"]) for k in s["looks"]] == [(11, 12), (12, 12), (8, 8)]
    lines = open(os.path.join(d, "looks.jsonl")).read().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["tasks"] in (8, 12) for x in lines)


@pytest.mark.skipif(not os.path.exists(BIN), reason="the dsonas binary is not built (DSONAS_BIN)")
def test_corrupt_looks_file_is_named(tmp_path):
    d = str(tmp_path / "study")
    make_study(d)
    report(d)
    before = open(os.path.join(d, "study.md")).read()
    with open(os.path.join(d, "looks.jsonl"), "a") as f:
        f.write("{\"retrains\": 12,\n")
    r = subprocess.run([BIN, "study"] + SYN + ["--study.random", "2", "--study.seeds", "2", "--study.report",
                                               "--out", d], capture_output=True, text=True)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "looks.jsonl" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert open(os.path.join(d, "study.md")).read() == before, "the report already there is kept"
