#!/usr/bin/python3
"""export_check.py LOGITS.h5 NET.pt NET.onnx NETWORK.h5 [--tol 1e-4] [--batch-onnx FIXED.onnx N]

Checks `dsonas export` against dsonas's own evaluation, with runtimes dsonas did
not write and without any dsonas code (run it with `python3 -I` from outside the
tree):
  * LOGITS.h5 (`dsonas eval --logits`): the test images as pixel values / 255
    (/input), as dsonas's network received them (/input_normalised) and dsonas's
    logits (/logits);
  * the input contract: (input − mean) / std with the mean and std the ONNX
    metadata declares equals /input_normalised (so a user who follows the
    documented contract feeds the network what dsonas fed it);
  * NET.onnx passes onnx.checker.check_model (full check), declares opset 17, the
    provenance metadata (arch equal to NETWORK.h5's, dsonas_version, input shape),
    and OpenCV's DNN module (cv2.dnn.readNetFromONNX) gives dsonas's logits within
    --tol, for the whole batch and for batch sizes 1 and 3;
  * NET.pt loads with torch.jit.load alone (TorchScript) and gives dsonas's logits
    within --tol; its dsonas.json extra file carries the same metadata;
  * FIXED.onnx (`--batch N`) has the input shape [N, C, H, W] and gives the logits
    of the first N images.
Prints one line of measurements; exit 1 with the reason on any failure.
"""
import argparse
import json
import sys

import cv2
import h5py
import numpy as np
import onnx
import torch


def fail(msg):
    print("export_check: FAIL: " + msg)
    sys.exit(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("logits")
    p.add_argument("pt")
    p.add_argument("onnx")
    p.add_argument("network")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--batch-onnx", nargs=2, default=None)
    a = p.parse_args()
    if "export_net" in sys.modules:
        fail("dsonas's export_net module was imported")

    with h5py.File(a.logits, "r") as f:
        x = f["input"][()]
        xn = f["input_normalised"][()]
        ref = f["logits"][()]
        fmean = json.loads(f.attrs["mean"])
        fstd = json.loads(f.attrs["std"])
    with h5py.File(a.network, "r") as f:
        arch_attr = f.attrs["arch"]
        arch_attr = arch_attr.decode() if isinstance(arch_attr, bytes) else arch_attr
        ver = f.attrs.get("dsonas_version", b"")
        ver = ver.decode() if isinstance(ver, bytes) else ver
    n, c, h, w = x.shape
    out = []

    # ---- ONNX: checker, metadata, OpenCV
    model = onnx.load(a.onnx)
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", 0) != 17:
        fail("ONNX opset %s, expected 17" % opsets)
    meta = {p_.key: p_.value for p_ in model.metadata_props}
    for k in ("arch", "source_dsonas_version", "input_shape", "mean", "std", "dataset", "input", "batch_norm"):
        if k not in meta:
            fail("ONNX metadata lacks %s" % k)
    if meta["arch"] != arch_attr:
        fail("ONNX metadata arch differs from the network file's")
    if ver and meta["source_dsonas_version"] != ver:
        fail("ONNX metadata dsonas_version differs from the network file's")
    if json.loads(meta["input_shape"]) != ["batch", c, h, w]:
        fail("ONNX input_shape %s, expected [batch, %d, %d, %d]" % (meta["input_shape"], c, h, w))
    if not model.doc_string.startswith("dsonas export of "):
        fail("ONNX doc_string: %r" % model.doc_string[:80])
    mean = np.array(json.loads(meta["mean"]), dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array(json.loads(meta["std"]), dtype=np.float32).reshape(1, -1, 1, 1)
    if not (np.allclose(mean.ravel(), fmean) and np.allclose(std.ravel(), fstd)):
        fail("ONNX mean/std %s/%s differ from dsonas eval's %s/%s" % (meta["mean"], meta["std"], fmean, fstd))
    contract = np.abs((x - mean) / std - xn).max()
    if not contract <= 1e-5 * max(1.0, float(np.abs(xn).max())):
        fail("(input - mean) / std differs from dsonas's normalised input by %g" % contract)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if dims != ["batch", c, h, w]:
        fail("ONNX graph input shape %s" % dims)
    net = cv2.dnn.readNetFromONNX(a.onnx)
    d_cv = 0.0
    for lo, hi in ((0, n), (0, 1), (1, 4)):
        net.setInput(np.ascontiguousarray(x[lo:hi]))
        z = net.forward()
        if z.shape != ref[lo:hi].shape:
            fail("OpenCV output shape %s for %d images" % (z.shape, hi - lo))
        d_cv = max(d_cv, float(np.abs(z - ref[lo:hi]).max()))
    if not d_cv <= a.tol:
        fail("OpenCV DNN logits differ from dsonas's by %g > %g" % (d_cv, a.tol))
    out.append("onnx (OpenCV %s): max |diff| %.3g" % (cv2.__version__, d_cv))

    # ---- TorchScript
    extra = {"dsonas.json": ""}
    m = torch.jit.load(a.pt, map_location="cpu", _extra_files=extra)
    tmeta = json.loads(extra["dsonas.json"])
    if tmeta.get("arch") != arch_attr or tmeta.get("mean") != meta["mean"] or tmeta.get("std") != meta["std"]:
        fail("TorchScript dsonas.json metadata differs from the ONNX one / the network file")
    if m.training:
        fail("the TorchScript module was saved in training mode")
    with torch.no_grad():
        y = m(torch.from_numpy(x)).numpy()
    d_pt = float(np.abs(y - ref).max())
    if not d_pt <= a.tol:
        fail("TorchScript logits differ from dsonas's by %g > %g" % (d_pt, a.tol))
    out.append("pytorch (torch %s): max |diff| %.3g" % (torch.__version__, d_pt))

    # ---- fixed batch
    if a.batch_onnx:
        fixed, nb = a.batch_onnx[0], int(a.batch_onnx[1])
        fm = onnx.load(fixed)
        onnx.checker.check_model(fm, full_check=True)
        dims = [d.dim_param or d.dim_value for d in fm.graph.input[0].type.tensor_type.shape.dim]
        if dims != [nb, c, h, w]:
            fail("--batch %d export has input shape %s" % (nb, dims))
        fnet = cv2.dnn.readNetFromONNX(fixed)
        fnet.setInput(np.ascontiguousarray(x[:nb]))
        d_fix = float(np.abs(fnet.forward() - ref[:nb]).max())
        if not d_fix <= a.tol:
            fail("--batch %d export: logits differ by %g" % (nb, d_fix))
        out.append("onnx --batch %d: max |diff| %.3g" % (nb, d_fix))

    print("%d images, |logits| up to %.3g; %s" % (n, float(np.abs(ref).max()), "; ".join(out)))


if __name__ == "__main__":
    main()
