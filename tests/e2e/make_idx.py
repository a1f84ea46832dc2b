#!/usr/bin/env python3
"""Writes small Fashion-MNIST-format IDX files (gzipped) for the e2e tests.

usage: make_idx.py DIR KIND
KIND: good | truncated | garbage | badmagic | badlabel | mismatch
Always writes the four files {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz;
KIND corrupts train-images (truncated, garbage, badmagic, mismatch) or
train-labels (badlabel).
"""
import gzip
import os
import random
import struct
import sys


def images(n, magic=0x803):
    rnd = random.Random(n)
    return struct.pack(">IIII", magic, n, 28, 28) + bytes(rnd.randrange(256) for _ in range(n * 784))


def labels(n, bad=None):
    data = bytearray(i % 10 for i in range(n))
    if bad is not None:
        data[bad] = 12
    return struct.pack(">II", 0x801, n) + bytes(data)


def main():
    d, kind = sys.argv[1], sys.argv[2]
    os.makedirs(d, exist_ok=True)
    files = {
        "train-images-idx3-ubyte.gz": images(256),
        "train-labels-idx1-ubyte.gz": labels(256, bad=17 if kind == "badlabel" else None),
        "t10k-images-idx3-ubyte.gz": images(64),
        "t10k-labels-idx1-ubyte.gz": labels(64),
    }
    if kind == "truncated":
        files["train-images-idx3-ubyte.gz"] = files["train-images-idx3-ubyte.gz"][:16 + 100 * 784]
    if kind == "badmagic":
        files["train-images-idx3-ubyte.gz"] = images(256, magic=0x1234)
    if kind == "mismatch":
        files["train-images-idx3-ubyte.gz"] = images(200)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            if kind == "garbage" and name == "train-images-idx3-ubyte.gz":
                f.write(b"\x1f\x8b\x08\x00garbage-not-a-gzip-stream" * 10)
            else:
                f.write(gzip.compress(data))


if __name__ == "__main__":
    main()
