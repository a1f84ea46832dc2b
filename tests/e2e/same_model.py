#!/usr/bin/env python3
"""same_model.py A.h5 B.h5 — exit 0 iff both HDF5 files hold the same datasets with
byte-identical contents (attributes are not compared).  Used by the e2e tests to
check bit-exact resume."""
import sys

import h5py
import numpy as np


def datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def main():
    a, b = datasets(sys.argv[1]), datasets(sys.argv[2])
    bad = sorted(n for n in a.keys() | b.keys() if n not in a or n not in b or not np.array_equal(a[n], b[n]))
    if bad:
        print("differ: %s" % bad[:5], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
