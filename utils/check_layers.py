#!/usr/bin/env python3
"""check_layers.py — `make check-layers`: every #include in src/ and include/dsonas/ runs
down the layer order of docs/architecture.md, never up, and every vendor header stays in
the layer that owns its library.

    core → backend → model → optim → {io, data, dist} → run

A file of layer L (src/L/… or include/dsonas/L/…) may include
  * "dsonas/M/…" when M is L or a layer below L (io, data and dist are one level:
    only the sibling arrows listed in SIBLINGS, which form no cycle);
  * a private header of its own folder tree by a plain relative name ("cpu_pool.hpp",
    "version.inc"), never one of another layer ("../backend/…", "src/…");
  * a system or vendor header <…>, vendor ones only from the layers in VENDOR.
Known exceptions are listed in EXCEPTIONS with their reason; each is printed on every run
so that it is not forgotten, and one that no longer occurs fails the check (remove it).
Exit 0 clean, 1 with one line per violation (file:line: what and why).
usage: utils/check_layers.py [ROOT]
"""
import os
import re
import sys

ORDER = {"core": 0, "backend": 1, "model": 2, "optim": 3, "io": 4, "data": 4, "dist": 4, "run": 5}
SIBLINGS = {("data", "io")}  # data writes the ImageNet manifest atomically (io/atomic_file)
VENDOR = [  # (header pattern, layers allowed to include it)
    (r"hdf5\.h|H5\w*\.h", {"io"}),
    (r"mpi\.h", {"dist"}),
    (r"nccl\.h", {"dist"}),
    (r"cblas\.h|openblas\w*\.h", {"backend"}),
    (r"cudnn\w*\.h|cublas\w*\.h|cuda\.h|cuda_runtime\w*\.h|cuda_fp16\.h|cuda_bf16\.h", {"backend", "dist"}),
    (r"turbojpeg\.h|jpeglib\.h", {"data"}),
    (r"boost/program_options.*|boost/version\.hpp", {"run"}),
    (r"boost/math/.*", {"core"}),
    (r"gtest/.*", set()),
    (r"omp\.h", {"backend", "data"}),
    (r"immintrin\.h", {"backend"}),
    (r"zlib\.h", {"io", "data"}),
]
# (file, included header): reason.  Each must still occur.
EXCEPTIONS = {
    ("src/data/imagenet_internal.hpp", "hdf5.h"):
        "the ImageNet shard reader and packer call HDF5 directly (data/imagenet_*.cpp); "
        "moving shard I/O behind io/ is issue 20's remaining layer item",
    ("src/data/imagenet_internal.hpp", "../io/h5_util.hpp"):
        "the same: the shard code uses io's private HDF5 helpers (RAII handles, checked calls)",
}


def layer_of(rel):
    parts = rel.split("/")
    if parts[0] == "src" and len(parts) > 2:
        return parts[1]
    if parts[:2] == ["include", "dsonas"] and len(parts) > 3:
        return parts[2]
    return None


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    bad, used, files = [], set(), 0
    inc_re = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
    for top in ("src", "include/dsonas"):
        for d, _, names in os.walk(os.path.join(root, top)):
            for n in sorted(names):
                if not n.endswith((".hpp", ".cpp", ".cu", ".cuh", ".h", ".inc")):
                    continue
                path = os.path.join(d, n)
                rel = os.path.relpath(path, root)
                L = layer_of(rel)
                if L is None:
                    if rel != "src/run/main.cpp":
                        bad.append("%s: not in a layer folder (src/<layer>/, include/dsonas/<layer>/)" % rel)
                    continue
                if L not in ORDER:
                    bad.append("%s: unknown layer '%s' (add it to docs/architecture.md and ORDER)" % (rel, L))
                    continue
                files += 1
                with open(path, encoding="utf-8") as f:
                    for ln, line in enumerate(f, 1):
                        m = inc_re.match(line)
                        if not m:
                            continue
                        kind, h = m.groups()
                        where = "%s:%d" % (rel, ln)
                        if (rel, h) in EXCEPTIONS:
                            used.add((rel, h))
                            continue
                        if kind == "<":
                            for pat, allowed in VENDOR:
                                if re.fullmatch(pat, h) and L not in allowed:
                                    bad.append("%s: <%s> is owned by %s, not %s" % (
                                        where, h, " / ".join(sorted(allowed)) or "the tests", L))
                            continue
                        if h.startswith("dsonas/"):
                            M = h.split("/")[1]
                            if M not in ORDER:
                                bad.append("%s: \"%s\": no layer '%s'" % (where, h, M))
                            elif M != L and ORDER[M] >= ORDER[L] and (L, M) not in SIBLINGS:
                                bad.append("%s: \"%s\": %s must not include %s (%s)" % (
                                    where, h, L, M, "a layer above it" if ORDER[M] > ORDER[L] else "a sibling layer"))
                            elif not os.path.exists(os.path.join(root, "include", h)):
                                bad.append("%s: \"%s\" does not exist under include/" % (where, h))
                            continue
                        # a private header: relative to the file's folder, inside the same layer
                        target = os.path.normpath(os.path.join(os.path.dirname(rel), h))
                        if not os.path.exists(os.path.join(root, target)) and \
                                not (h == "version.inc" and rel == "src/core/version.cpp"):
                            bad.append("%s: \"%s\" is not a header beside it (public headers: \"dsonas/<layer>/…\")" % (where, h))
                        elif layer_of(target) not in (L, None) or target.startswith(".."):
                            bad.append("%s: \"%s\" reaches into layer %s's private headers" % (where, h, layer_of(target)))
    for key, why in sorted(EXCEPTIONS.items()):
        if key in used:
            print("check-layers: known exception: %s includes %s: %s" % (key[0], key[1], why))
        else:
            bad.append("%s: the exception for %s no longer occurs: remove it from EXCEPTIONS" % key)
    for b in bad:
        print("check-layers: " + b, file=sys.stderr)
    print("check-layers: %d files, %d violation%s" % (files, len(bad), "" if len(bad) == 1 else "s"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
