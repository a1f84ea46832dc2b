#!/usr/bin/python3
"""export_net.py — a dsonas retrain network file (network.h5) as a PyTorch module,
saved as TorchScript or ONNX, for use outside dsonas.

Run by `dsonas export` (src/run/export.cpp), which checks the network file first
(seal, checksums, shapes) and passes the input normalisation of the dataset the
network was trained on (the one `dsonas eval` applies), so this tool has one
source of truth for it:

    export_net.py --net network.h5 --format onnx|pytorch --out FILE
                  --dataset NAME --mean m1[,m2,m3] --std s1[,s2,s3] [--batch N]
                  [--exporter TEXT]

The module (build_module) is the inference network of docs/checkpoint-format.md
and src/model/network.cpp, built from the architecture JSON (`arch` attribute):

  input x  [N, C, H, W] float32, pixel values / 255 in [0, 1] (channel order of
           the dataset: grey for Fashion-MNIST, RGB for CIFAR-10 and ImageNet)
  normalise  (x − mean_c) / std_c   (mean, std on the [0, 1] scale; built in)
  stem     3×3 conv (stride 1, pad 1) → BN → ReLU; the ImageNet stem is two 3×3
           stride-2 convs (C/2 then C channels), each → BN → ReLU
  stages   normal blocks and reductions in order:
           block: node 0 = block input; each live op (level-major) reads the plain
             sum of its live inputs; sep3/sep5 = depthwise k×k (pad k/2) → 1×1 →
             BN → ReLU; max3/avg3 = 3×3 stride-1 pad-1 pooling (average counts the
             padding: count_include_pad) → BN → ReLU; the live output branches
             are 1×1 convs summed (one 1×1 conv over their concatenation) → BN →
             ReLU, plus the shortcut (1×1 conv → BN → ReLU in the first unit of a
             stage, else the identity); a block without branches is its shortcut;
           reduction: the sum of its live branches, 1×1 stride 2 and 3×3 stride 2
             pad 1 convs, each → BN → ReLU
  head     BN → ReLU → global average pool → fully connected → logits [N, classes]

Every BN uses eps 2e-5 and, in eval() mode, the running statistics of the file.
Left out (training only): the auxiliary head (its aux/* tensors are ignored),
dropout before the classifier, drop-path.

Exit codes: 0 done, 2 bad usage, 3 the network file is unusable, 1 anything else
(a Python package missing, a write error); every failure ends with one line on
stderr.
"""
import argparse
import io
import json
import os
import sys

BN_EPS = 2e-5
EXPORT_FORMAT = "dsonas-export"
ONNX_OPSET = 17  # the highest opset both onnx 1.12's checker and PyTorch 1.13's exporter support


class ExportError(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


def need(module, package):
    try:
        return __import__(module)
    except ImportError as e:
        raise ExportError(1, "needs the Python module '%s' (Debian package %s; `make deps` installs it): %s"
                          % (module, package, e))


torch = None
nn = None
F = None


def _import_torch():
    global torch, nn, F
    torch = need("torch", "python3-torch")
    import torch.nn as _nn
    import torch.nn.functional as _F
    nn, F = _nn, _F


_import_torch_error = None
try:
    _import_torch()
except ExportError as _e:  # reported when the tool runs; importing this file still works
    _import_torch_error = _e

if torch is not None:
    from typing import List

    class Normalize(nn.Module):
        """(x − mean) / std per channel; x holds pixel values / 255.  The constants
        have the shape [C, 1, 1]: OpenCV 4.6's DNN module misreads a [1, C, 1, 1]
        operand of Sub/Div when the batch differs from C."""

        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

        def forward(self, x):
            return (x - self.mean) / self.std

    def bn(c):
        # dsonas's running average r ← 0.9·r + 0.1·batch is PyTorch's momentum 0.1
        return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.1)

    class ConvBNReLU(nn.Module):
        def __init__(self, cin, cout, k, stride, pad):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
            self.bn = bn(cout)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    class SepConv(nn.Module):
        """sep3 / sep5: depthwise k×k → pointwise 1×1 → BN → ReLU."""

        def __init__(self, c, k):
            super().__init__()
            self.dw = nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False)
            self.pw = nn.Conv2d(c, c, 1, bias=False)
            self.bn = bn(c)

        def forward(self, x):
            return F.relu(self.bn(self.pw(self.dw(x))))

    class Pool(nn.Module):
        """max3 / avg3: 3×3, stride 1, pad 1 (average divides by 9 everywhere) → BN → ReLU."""

        def __init__(self, c, kind):
            super().__init__()
            if kind == "max3":
                self.pool = nn.MaxPool2d(3, stride=1, padding=1)
            else:
                self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
            self.bn = bn(c)

        def forward(self, x):
            return F.relu(self.bn(self.pool(x)))

    class NormalBlock(nn.Module):
        inputs: List[List[int]]
        branches: List[int]
        has_out: bool

        def __init__(self, c, ops, inputs, branches, id_conv):
            super().__init__()
            self.ops = nn.ModuleList(ops)
            self.inputs = inputs        # per op: node indices (0 = block input, 1 + p = op p)
            self.branches = branches    # node indices of the live output branches, in order
            self.has_out = len(branches) > 0
            self.out = ConvBNReLU(len(branches) * c, c, 1, 1, 0) if self.has_out else nn.Identity()
            self.shortcut = ConvBNReLU(c, c, 1, 1, 0) if id_conv else nn.Identity()

        def forward(self, x):
            nodes: List[torch.Tensor] = [x]
            i = 0
            for op in self.ops:
                ins = self.inputs[i]
                a = nodes[ins[0]]
                for j in range(1, len(ins)):
                    a = a + nodes[ins[j]]
                nodes.append(op(a))
                i += 1
            s = self.shortcut(x)
            if self.has_out:
                if len(self.branches) == 1:
                    return self.out(nodes[self.branches[0]]) + s
                hs: List[torch.Tensor] = []
                for b in self.branches:
                    hs.append(nodes[b])
                return self.out(torch.cat(hs, 1)) + s
            return s

    class Reduction(nn.Module):
        has0: bool
        has1: bool

        def __init__(self, cin, cout, live):
            super().__init__()
            self.has0, self.has1 = bool(live[0]), bool(live[1])
            self.b0 = ConvBNReLU(cin, cout, 1, 2, 0) if self.has0 else nn.Identity()
            self.b1 = ConvBNReLU(cin, cout, 3, 2, 1) if self.has1 else nn.Identity()

        def forward(self, x):
            if self.has0 and self.has1:
                return self.b0(x) + self.b1(x)
            if self.has0:
                return self.b0(x)
            return self.b1(x)

    class Head(nn.Module):
        def __init__(self, c, classes):
            super().__init__()
            self.bn = bn(c)
            self.fc = nn.Linear(c, classes)

        def forward(self, x):
            x = F.relu(self.bn(x))
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.fc(x)

    class DsonasNet(nn.Module):
        def __init__(self, normalize, stem, body, head):
            super().__init__()
            self.normalize = normalize
            self.stem = stem
            self.body = body
            self.head = head

        def forward(self, x):
            return self.head(self.body(self.stem(self.normalize(x))))


def op_input_index(name, N):
    """'in' → 0, 'l{l}/o{j}' → 1 + N(l−1) + (j−1) (the λ-row index of architecture.hpp)."""
    if name == "in":
        return 0
    l, o = name.split("/")
    return 1 + N * (int(l[1:]) - 1) + (int(o[1:]) - 1)


def build_module(arch, mean, std):
    """The inference nn.Module of an architecture (parsed arch JSON) and a map
    dsonas tensor name → (module tensor, kind) with kind 'param' or 'mean'/'var'."""
    sp = arch["space"]
    N, C = len(sp["ops"]), sp["stem_channels"]
    cin = sp["input"][0]
    names = {}

    def bn_names(prefix, m):
        names[prefix + "/gamma"] = m.weight
        names[prefix + "/beta"] = m.bias
        names["bn:" + prefix + "/mean"] = m.running_mean
        names["bn:" + prefix + "/var"] = m.running_var

    def cbr_names(conv_name, bn_prefix, m):
        names[conv_name] = m.conv.weight
        bn_names(bn_prefix, m.bn)

    if sp["stem"] == "conv3":
        s = ConvBNReLU(cin, C, 3, 1, 1)
        cbr_names("stem/conv/weight", "stem/bn", s)
        stem = nn.Sequential(s)
    elif sp["stem"] == "imagenet2x":
        s1, s2 = ConvBNReLU(cin, C // 2, 3, 2, 1), ConvBNReLU(C // 2, C, 3, 2, 1)
        cbr_names("stem/conv1/weight", "stem/bn1", s1)
        cbr_names("stem/conv2/weight", "stem/bn2", s2)
        stem = nn.Sequential(s1, s2)
    else:
        raise ExportError(3, "unknown stem '%s'" % sp["stem"])

    blocks = {(b["stage"], b["unit"]): b for b in arch["blocks"]}
    reds = {r["name"]: r for r in arch["reductions"]}
    body = []
    wcats = []  # (block module, [dsonas names of the branch weights]) — concatenated at load time
    for s, units in enumerate(sp["normal_units"], start=1):
        for u in range(1, units + 1):
            b = blocks[(s, u)]
            F_ = b["channels"]
            pos = {}
            ops, inputs, branches, bnames = [], [], [], []
            for p, o in enumerate(b["ops"]):
                pre = "%s/l%d/o%d/" % (b["name"], o["level"], o["op"])
                if o["type"] in ("sep3", "sep5"):
                    m = SepConv(F_, 3 if o["type"] == "sep3" else 5)
                    names[pre + "dw/weight"] = m.dw.weight
                    names[pre + "pw/weight"] = m.pw.weight
                elif o["type"] in ("max3", "avg3"):
                    m = Pool(F_, o["type"])
                else:
                    raise ExportError(3, "%s: unknown op type '%s'" % (b["name"], o["type"]))
                bn_names(pre + "bn", m.bn)
                ops.append(m)
                ins = []
                for name in o["inputs"]:
                    i = op_input_index(name, N)
                    if i != 0 and i not in pos:
                        raise ExportError(3, "%s: input %s of l%d/o%d is not an earlier live op"
                                          % (b["name"], name, o["level"], o["op"]))
                    ins.append(0 if i == 0 else 1 + pos[i])
                inputs.append(ins)
                pos[op_input_index("l%d/o%d" % (o["level"], o["op"]), N)] = p
                if o["output"]:
                    branches.append(1 + p)
                    bnames.append("%s/out/c%02d/weight" % (b["name"], N * (o["level"] - 1) + o["op"]))
            id_conv = b["shortcut"] == "id_conv"
            blk = NormalBlock(F_, ops, inputs, branches, id_conv)
            if blk.has_out:
                wcats.append((blk.out.conv.weight, bnames))
                bn_names(b["name"] + "/out/bn", blk.out.bn)
            if id_conv:
                cbr_names(b["name"] + "/id/conv/weight", b["name"] + "/id/bn", blk.shortcut)
            body.append(blk)
        if s < len(sp["normal_units"]):
            r = reds["s%d/red" % s]
            live = ("1x1" in r["branches"], "3x3" in r["branches"])
            red = Reduction(r["in_channels"], r["out_channels"], live)
            for i in range(2):
                if live[i]:
                    cbr_names("%s/b%d/conv/weight" % (r["name"], i), "%s/b%d/bn" % (r["name"], i),
                              red.b0 if i == 0 else red.b1)
            body.append(red)
    head = Head(sp["widths"][-1], sp["classes"])
    bn_names("head/bn", head.bn)
    names["head/fc/weight"] = head.fc.weight
    names["head/fc/bias"] = head.fc.bias
    net = DsonasNet(Normalize(mean, std), stem, nn.Sequential(*body), head)
    return net, names, wcats


def read_network(path):
    """(attrs, params, bn) of a dsonas network file; ExportError(3) if it is not one."""
    h5py = need("h5py", "python3-h5py")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ExportError(3, "%s: not an HDF5 file (%s)" % (path, e))
    with f:
        attrs = {}
        for k, v in f.attrs.items():
            attrs[k] = v.decode() if isinstance(v, bytes) else v
        fmt = attrs.get("format", "")
        if fmt not in ("dsonas-network", "dsonas-network-checkpoint"):
            raise ExportError(3, "%s: not a dsonas network file (format attribute '%s')" % (path, fmt))
        for k in ("arch", "options"):
            if k not in attrs:
                raise ExportError(3, "%s: no '%s' attribute" % (path, k))
        params, bns = {}, {}

        def collect(prefix, group, out):
            for k, v in group.items():
                if isinstance(v, h5py.Group):
                    collect(prefix + k + "/", v, out)
                else:
                    out[prefix + k] = v[()]
        if "params" not in f:
            raise ExportError(3, "%s: no /params group" % path)
        collect("", f["params"], params)
        if "bn" in f:
            collect("", f["bn"], bns)
    return attrs, params, bns


def load_weights(path, net, names, wcats, params, bns):
    import numpy as np
    used = set()

    def put(t, arr, what):
        arr = np.asarray(arr, dtype=np.float32)
        if tuple(arr.shape) != tuple(t.shape):
            raise ExportError(3, "%s: %s has shape %s, the architecture needs %s"
                              % (path, what, list(arr.shape), list(t.shape)))
        with torch.no_grad():
            t.copy_(torch.from_numpy(arr))

    for name, t in names.items():
        if name.startswith("bn:"):
            key = name[3:]
            if key not in bns:
                raise ExportError(3, "%s: missing dataset bn/%s" % (path, key))
            put(t, bns[key], "bn/" + key)
        else:
            if name not in params:
                raise ExportError(3, "%s: missing dataset params/%s" % (path, name))
            put(t, params[name], "params/" + name)
            used.add(name)
    for t, bnames in wcats:
        parts = []
        for name in bnames:
            if name not in params:
                raise ExportError(3, "%s: missing dataset params/%s" % (path, name))
            parts.append(np.asarray(params[name], dtype=np.float32))
            used.add(name)
        put(t, np.concatenate(parts, axis=1), "+".join("params/" + n for n in bnames))
    extra = sorted(k for k in params if k not in used and not k.startswith("aux/"))
    if extra:
        raise ExportError(3, "%s: params/%s is not part of the architecture" % (path, extra[0]))
    for m in net.modules():  # BN "batches seen" is irrelevant for inference; keep it at 0
        if isinstance(m, nn.BatchNorm2d):
            m.num_batches_tracked.zero_()


def floats(text, what):
    try:
        v = [float(s) for s in text.split(",")]
    except ValueError:
        raise ExportError(2, "%s: expected comma-separated numbers, got '%s'" % (what, text))
    if not v or any(not (x == x) for x in v):
        raise ExportError(2, "%s: expected comma-separated numbers, got '%s'" % (what, text))
    return v


def metadata(args, attrs, arch, mean, std):
    sp = arch["space"]
    c, h, w = sp["input"]
    return {
        "format": EXPORT_FORMAT,
        "format_version": "1",
        "exported_by": args.exporter or "utils/export_net.py",
        "source": os.path.abspath(args.net),
        "source_dsonas_version": attrs.get("dsonas_version", "(not recorded: the file predates dsonas 0.6.0)"),
        "source_step": str(attrs.get("step", "")),
        "source_seed": str(attrs.get("seed", "")),
        "arch": attrs["arch"],
        "options": attrs["options"],
        "dataset": args.dataset,
        "input_shape": json.dumps([args.batch if args.batch else "batch", c, h, w]),
        "input": ("float32 NCHW [%s, %d, %d, %d]: pixel values / 255 in [0, 1], channel order of the dataset; "
                  "the normalisation (x - mean) / std is inside the model") % (args.batch or "batch", c, h, w),
        "mean": json.dumps(mean),
        "std": json.dumps(std),
        "output": "float32 [batch, %d]: logits of the main head (no softmax)" % sp["classes"],
        "classes": str(sp["classes"]),
        "left_out": "auxiliary head, dropout, drop-path (training only)",
    }


def write_atomically(path, data):
    tmp = "%s.tmp%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise ExportError(1, "write %s: %s" % (path, e.strerror or e))


def export_pytorch(net, meta, out):
    """TorchScript (torch.jit.script): one file, torch.jit.load needs no dsonas code."""
    scripted = torch.jit.script(net)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf, _extra_files={"dsonas.json": json.dumps(meta, indent=1, sort_keys=True)})
    write_atomically(out, buf.getvalue())
    # read back what was written: the loaded module must compute what the built one does
    loaded = torch.jit.load(out, map_location="cpu")
    return loaded


def undo_shared_initializers(model, onnx):
    """torch.onnx replaces an initializer equal to another one (e.g. the BN statistics
    of two identical pooling ops on the same input) by an Identity node reading the
    other; OpenCV 4.6's DNN module refuses an Identity of a constant.  Each such node
    becomes a copy of the constant under its output name."""
    inits = {t.name: t for t in model.graph.initializer}
    keep = []
    for n in model.graph.node:
        if n.op_type == "Identity" and len(n.input) == 1 and n.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[n.input[0]])
            t.name = n.output[0]
            model.graph.initializer.append(t)
        else:
            keep.append(n)
    if len(keep) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep)


def export_onnx(net, meta, out, batch, example):
    onnx = need("onnx", "python3-onnx")
    buf = io.BytesIO()
    dyn = None if batch else {"input": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(net, example, buf, input_names=["input"], output_names=["logits"], dynamic_axes=dyn,
                      opset_version=ONNX_OPSET, do_constant_folding=True,
                      training=torch.onnx.TrainingMode.EVAL)
    model = onnx.load_from_string(buf.getvalue())
    undo_shared_initializers(model, onnx)
    n_bn = sum(1 for n in model.graph.node if n.op_type == "BatchNormalization")
    n_conv = sum(1 for n in model.graph.node if n.op_type == "Conv")
    meta = dict(meta)
    meta["onnx_opset"] = str(ONNX_OPSET)
    meta["batch_norm"] = ("folded into the preceding convolution where one precedes it (%d Conv nodes); "
                          "%d BatchNormalization nodes remain (after pooling ops and in the head), in "
                          "inference form with the running statistics" % (n_conv, n_bn))
    model.doc_string = ("dsonas export of %s (dataset %s): input %s; output %s. BN: %s. Left out: %s. "
                        "dsonas provenance in metadata_props."
                        % (meta["source"], meta["dataset"], meta["input"], meta["output"], meta["batch_norm"],
                           meta["left_out"]))
    for k in sorted(meta):
        p = model.metadata_props.add()
        p.key, p.value = k, meta[k]
    onnx.checker.check_model(model)
    write_atomically(out, model.SerializeToString())
    return n_conv, n_bn


def run(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", required=True, help="a dsonas network file (network.h5)")
    p.add_argument("--format", required=True, help="onnx | pytorch")
    p.add_argument("--out", required=True)
    p.add_argument("--dataset", required=True, help="the dataset the network was trained on (metadata)")
    p.add_argument("--mean", required=True, help="per-channel mean of the input normalisation, [0, 1] scale")
    p.add_argument("--std", required=True, help="per-channel std of the input normalisation, [0, 1] scale")
    p.add_argument("--batch", type=int, default=0, help="onnx: fixed batch size (default: a dynamic batch axis)")
    p.add_argument("--exporter", default="", help="what ran the export (dsonas --version's first line)")
    p.add_argument("--name", default="", help="the name to report for --out (dsonas export writes a temporary file)")
    args = p.parse_args(argv)
    if _import_torch_error is not None:
        raise _import_torch_error
    if args.format not in ("onnx", "pytorch"):
        raise ExportError(2, "--format: '%s' (expected onnx or pytorch)" % args.format)
    if args.batch < 0 or (args.batch and args.format != "onnx"):
        raise ExportError(2, "--batch: a positive batch size, for --format onnx only")
    if args.format == "onnx":
        need("onnx", "python3-onnx")  # before any work
    mean, std = floats(args.mean, "--mean"), floats(args.std, "--std")
    if any(s <= 0 for s in std):
        raise ExportError(2, "--std: must be > 0")
    attrs, params, bns = read_network(args.net)
    try:
        arch = json.loads(attrs["arch"])
        c = arch["space"]["input"][0]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ExportError(3, "%s: the arch attribute does not parse (%s)" % (args.net, e))
    if len(mean) == 1:
        mean = mean * c
    if len(std) == 1:
        std = std * c
    if len(mean) != c or len(std) != c:
        raise ExportError(2, "--mean/--std: %d/%d values for %d input channels" % (len(mean), len(std), c))
    torch.manual_seed(0)
    try:
        net, names, wcats = build_module(arch, mean, std)
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(3, "%s: the arch attribute is not a dsonas architecture (%s: %s)"
                          % (args.net, type(e).__name__, e))
    load_weights(args.net, net, names, wcats, params, bns)
    net.eval()
    meta = metadata(args, attrs, arch, mean, std)
    sp = arch["space"]
    example = torch.rand(args.batch or 2, *sp["input"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(example)
    if args.format == "pytorch":
        loaded = export_pytorch(net, meta, args.out)
        with torch.no_grad():
            got = loaded(example)
        what = "TorchScript (torch.jit.load)"
    else:
        n_conv, n_bn = export_onnx(net, meta, args.out, args.batch, example)
        got = None
        what = "ONNX opset %d, %s, %d Conv and %d BatchNormalization nodes (BN folded into convolutions)" % (
            ONNX_OPSET, "batch %d" % args.batch if args.batch else "dynamic batch", n_conv, n_bn)
    size = os.path.getsize(args.out)
    line = "export: %s -> %s: %s, %d bytes, %d parameters" % (
        args.net, args.name or args.out, what, size, sum(t.numel() for t in net.parameters()))
    if got is not None:
        d = float((got - ref).abs().max())
        if not d <= 1e-5:
            os.remove(args.out)
            raise ExportError(1, "the saved TorchScript module differs from the built one by %g" % d)
        line += "; reloaded: max |logit difference| %.3g" % d
    print(line)
    return 0


def main():
    try:
        return run(sys.argv[1:])
    except ExportError as e:
        print("export_net.py: %s" % e, file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
