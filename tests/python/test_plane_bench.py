"""build/tests/plane_bench (make bench's side-by-side timing of the stride-1 plane kernels):
it runs, writes a JSON with every kernel of the three stages, and refuses bad options.
Timings themselves are not asserted (machines are shared and noisy; make bench reports them)."""
import json
import os
import subprocess

BIN = os.path.join(os.path.dirname(os.environ.get("DSONAS_BIN", "build/dsonas")), "tests", "plane_bench")


def test_runs_and_writes_every_kernel(tmp_path):
    out = tmp_path / "planes.json"
    r = subprocess.run([BIN, "--threads", "1", "--rounds", "1", "--reps", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["threads"] == 1 and d["rounds"] == 1
    names = [k["kernel"] for k in d["kernels"]]
    assert len(names) == 24  # 3 stages x (dw3, dw5) x (forward, backward-data) + 2 poolings x 2 directions
    for stage in ("16x64x28^2", "32x64x14^2", "64x64x7^2"):
        assert sum(stage in n for n in names) == 8
    for k in d["kernels"]:
        assert k["avx2_ms"] > 0
        if d["avx512"]:
            assert k["avx512_ms"] > 0 and k["ratio"] > 0
    assert ("AVX-512 form vs 8-wide form" if d["avx512"] else "the 8-wide form only") in r.stdout


def test_without_avx512_times_one_form(tmp_path):
    out = tmp_path / "planes.json"
    env = dict(os.environ, DSONAS_CPU_AVX512="0")
    r = subprocess.run([BIN, "--rounds", "1", "--reps", "1", "--json", str(out)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["avx512"] is False
    assert all("avx512_ms" not in k for k in d["kernels"])


def test_bad_options_exit_2():
    for args in (["--rounds", "0"], ["--threads"], ["--bogus"]):
        r = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
