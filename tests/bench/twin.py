"""twin.py — the PyTorch "twin" of the dsonas DSO-NAS supergraph.

`build_twin(space_json)` builds, from the SearchSpace JSON that dsonas writes
(SearchSpace::to_json), an eager PyTorch model of the search network with the
exact dsonas parameter names ('/'-separated, e.g. "s1/u1/l2/o1/dw/weight",
"s1/u1/lambda/after", "head/fc/bias").  It serves two purposes:

* the correctness oracle of tests/bench/test_twin.py (compared against the C++
  Supergraph through a DSOD dump, see `load_dump`), and
* the speed baseline of tests/bench/bench.py (`w_step` / `lambda_step`).

Semantics (docs/method.md §1–4): NCHW float tensors, convs without bias, every BN
eps 2e-5 / momentum 0.1 (MXNet 0.9) with batch statistics in training mode;
BN γ fixed to 1 in the op BNs, id_conv and reduction BNs (stored as buffers,
not trained), learned in stem, block-output and head BNs.  A normal block is
L levels × N ops with dense λ-weighted inputs, per-branch 1×1 output convs
scaled by λ_after, BN → ReLU, plus the shortcut (id_conv in the first block of
a stage); the reduction block sums two λ-scaled stride-2 branches.

Names: `model.params` maps every dsonas parameter name (weights and λ groups)
to its nn.Parameter, `model.buffers_by_name` every BN running statistic and
fixed γ.  The same tensors are registered in nn.ParameterDict / buffers under
names with '/' replaced by '__' so that the usual Module machinery works.

Implementation: plain eager PyTorch, as a competent user would write it and
as fast as that gets on CPU (measured against stacked-matmul / concatenated
variants): channels-first tensors, F.conv2d with groups for depthwise, λ-edge
sums accumulated in place (addcmul_), one 1×1 conv per output branch, the BN
running statistics updated by F.batch_norm.  `dtype` picks float32 (default)
or float64.  `enable_lambda_trace()` switches to a slower path that also
measures the conditioning of every λ gradient (used by the test only).

Masks: `set_masks({λ group: 0/1 array})` marks pruned λ entries (docs/method.md
§6.2).  Masked entries count as 0, and ops that the dead-op rule (§6.1) finds
dead are skipped entirely (no compute, no BN statistics update), as in the
C++ Supergraph.  Without masks everything is live.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 2e-5
BN_MOMENTUM = 0.1  # PyTorch convention; MXNet momentum 0.9
GRAD_CLIP = 2.0
OP_KINDS = ("sep3", "sep5", "max3", "avg3")


def _key(name):
    return name.replace("/", "__")


def is_lambda(name):
    """True for λ group names (edge rows, λ_after, reduction λ)."""
    return "lambda" in name.split("/")


class _BN:
    """References to one BN's tensors; gamma is a buffer when γ is fixed."""

    __slots__ = ("prefix", "gamma", "beta", "mean", "var")

    def __init__(self, prefix, gamma, beta, mean, var):
        self.prefix, self.gamma, self.beta, self.mean, self.var = prefix, gamma, beta, mean, var


class _LambdaScale(torch.autograd.Function):
    """y = t·λ[i], whose backward also adds Σ|∂L/∂y ⊙ t| to abs_sum[i]."""

    @staticmethod
    def forward(ctx, t, lam, i, abs_sum):
        ctx.save_for_backward(t, lam)
        ctx.i, ctx.abs_sum = i, abs_sum
        return t * lam[i]

    @staticmethod
    def backward(ctx, g):
        t, lam = ctx.saved_tensors
        terms = g * t
        ctx.abs_sum[ctx.i] += terms.abs().sum().double()
        dlam = torch.zeros_like(lam)
        dlam[ctx.i] = terms.sum()
        return g * lam[ctx.i], dlam, None, None


class DsoTwin(nn.Module):
    """DSO-NAS search supergraph; forward(x) returns the logits."""

    def __init__(self, space, dtype=torch.float32, seed=0):
        super().__init__()
        self.space = dict(space)
        self.dtype = dtype
        self.L = int(space["levels"])
        self.ops = list(space["ops"])
        self.N = len(self.ops)
        for op in self.ops:
            if op not in OP_KINDS:
                raise ValueError(f"twin: unknown op '{op}'")
        self.share = bool(space["share"])
        self.pdict = nn.ParameterDict()
        self.params = {}            # dsonas name -> nn.Parameter (weights and λ)
        self.buffers_by_name = {}   # dsonas name -> tensor (running stats, fixed γ)
        self.masks = {}             # λ group name -> 0/1 tensor (absent: all live)
        self.momenta = {}           # dsonas name -> momentum buffer (NAG / APG-NAG)
        self.trace_lambda = False   # test diagnostics, see enable_lambda_trace
        self.lambda_abs = {}
        self._gen = torch.Generator().manual_seed(seed)
        self._build()
        self._update_liveness()

    # ------------------------------------------------------------------ building
    def _param(self, name, shape, init):
        if name in self.params:
            raise ValueError(f"twin: duplicate parameter {name}")
        t = torch.empty(shape, dtype=self.dtype)
        if init == "conv":  # MXNet Xavier gaussian, factor out, magnitude 2
            fan_out = shape[0] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            t.normal_(0.0, math.sqrt(2.0 / fan_out), generator=self._gen)
        elif init == "fc":
            t.normal_(0.0, 0.01, generator=self._gen)
        else:
            t.fill_(float(init))
        p = nn.Parameter(t)
        self.pdict[_key(name)] = p
        self.params[name] = p
        return p

    def _buffer(self, name, shape, value):
        t = torch.full(shape, float(value), dtype=self.dtype)
        self.register_buffer(_key(name), t)
        self.buffers_by_name[name] = t
        return t

    def _bn(self, prefix, c, fixed_gamma):
        if fixed_gamma:
            gamma = self._buffer(prefix + "/gamma", (c,), 1.0)
        else:
            gamma = self._param(prefix + "/gamma", (c,), 1.0)
        beta = self._param(prefix + "/beta", (c,), 0.0)
        mean = self._buffer(prefix + "/mean", (c,), 0.0)
        var = self._buffer(prefix + "/var", (c,), 1.0)
        return _BN(prefix, gamma, beta, mean, var)

    def _conv(self, name, cout, cin, k):
        return self._param(name, (cout, cin, k, k), "conv")

    def _lambda_groups(self, prefix):
        """Creates (or returns, for share) the λ rows and λ_after of a normal block."""
        if prefix in self._lam_cache:
            return self._lam_cache[prefix]
        rows = {}
        for l in range(2, self.L + 1):
            for j in range(1, self.N + 1):
                rows[(l, j)] = f"{prefix}/l{l}/o{j}"
                self._param(rows[(l, j)], (1 + self.N * (l - 1),), 1.0)
        after = f"{prefix}/after"
        self._param(after, (self.N * self.L,), 1.0)
        self._lam_cache[prefix] = (rows, after)
        return rows, after

    def _build(self):
        sp = self.space
        cin, _, _ = sp["input"]
        C = int(sp["stem_channels"])
        widths = [int(w) for w in sp["widths"]]
        units = [int(u) for u in sp["normal_units"]]
        if len(widths) != len(units):
            raise ValueError("twin: widths and normal_units differ in length")
        self._lam_cache = {}
        if sp["stem"] == "conv3":
            self.stem = [(self._conv("stem/conv/weight", C, cin, 3), 1, self._bn("stem/bn", C, False))]
        elif sp["stem"] == "imagenet2x":
            self.stem = [(self._conv("stem/conv1/weight", C // 2, cin, 3), 2, self._bn("stem/bn1", C // 2, False)),
                         (self._conv("stem/conv2/weight", C, C // 2, 3), 2, self._bn("stem/bn2", C, False))]
        else:
            raise ValueError(f"twin: unknown stem {sp['stem']}")
        if C != widths[0]:
            raise ValueError(f"twin: stem_channels {C} != widths[0] {widths[0]}")
        self.stages = []  # list of (blocks, reduction or None)
        for s in range(1, len(units) + 1):
            Fw = widths[s - 1]
            blocks = []
            for u in range(1, units[s - 1] + 1):
                pre = f"s{s}/u{u}"
                lam_prefix = "shared/lambda" if self.share else f"{pre}/lambda"
                rows, after = self._lambda_groups(lam_prefix)
                ops = {}
                for l in range(1, self.L + 1):
                    for j, kind in enumerate(self.ops, start=1):
                        op = f"{pre}/l{l}/o{j}"
                        if kind in ("sep3", "sep5"):
                            k = 3 if kind == "sep3" else 5
                            dw = self._param(f"{op}/dw/weight", (Fw, 1, k, k), "conv")
                            pw = self._conv(f"{op}/pw/weight", Fw, Fw, 1)
                        else:
                            dw = pw = None
                        ops[(l, j)] = (kind, dw, pw, self._bn(f"{op}/bn", Fw, True))
                outc = [self._conv(f"{pre}/out/c{k + 1:02d}/weight", Fw, Fw, 1) for k in range(self.N * self.L)]
                out_bn = self._bn(f"{pre}/out/bn", Fw, False)
                idc = None
                if u == 1:
                    idc = (self._conv(f"{pre}/id/conv/weight", Fw, Fw, 1), self._bn(f"{pre}/id/bn", Fw, True))
                blocks.append(dict(name=pre, lam_prefix=lam_prefix, rows=rows, after=after, ops=ops,
                                   outc=outc, out_bn=out_bn, idc=idc))
            red = None
            if s < len(units):
                if widths[s] != 2 * Fw:
                    raise ValueError(f"twin: widths[{s}] = {widths[s]} is not 2 x {Fw}")
                pre = f"s{s}/red"
                self._param(f"{pre}/lambda", (2,), 1.0)
                red = dict(name=pre, lam=f"{pre}/lambda",
                           b0=(self._conv(f"{pre}/b0/conv/weight", 2 * Fw, Fw, 1), self._bn(f"{pre}/b0/bn", 2 * Fw, True)),
                           b1=(self._conv(f"{pre}/b1/conv/weight", 2 * Fw, Fw, 3), self._bn(f"{pre}/b1/bn", 2 * Fw, True)))
            self.stages.append((blocks, red))
        self.head_bn = self._bn("head/bn", widths[-1], False)
        self.fc_w = self._param("head/fc/weight", (int(sp["classes"]), widths[-1]), "fc")
        self.fc_b = self._param("head/fc/bias", (int(sp["classes"]),), 0.0)
        del self._lam_cache
        total = sum(p.numel() for n, p in self.params.items() if is_lambda(n))
        if "total_lambda" in sp and int(sp["total_lambda"]) != total:
            raise ValueError(f"twin: {total} λ but the space says {sp['total_lambda']}")
        self.total_lambda = total

    # ------------------------------------------------------------------ names
    def weight_names(self):
        return [n for n in self.params if not is_lambda(n)]

    def lambda_names(self):
        return [n for n in self.params if is_lambda(n)]

    def tensor(self, name):
        """The parameter or buffer called `name` (exact dsonas name)."""
        if name in self.params:
            return self.params[name]
        return self.buffers_by_name[name]

    def enable_lambda_trace(self):
        """Makes backward also accumulate, per λ entry, Σ|terms| of its gradient.

        ∂L/∂λ[i] = Σ (∂L/∂y ⊙ t) over every use y = λ[i]·t; `lambda_abs[name][i]`
        gets Σ|∂L/∂y ⊙ t|, the scale against which the float32 rounding error of the
        gradient is measured (BN makes many λ gradients sums with heavy cancellation).
        Slower (no in-place accumulation); reset the sums with zero_() before a pass.
        """
        self.trace_lambda = True
        self.lambda_abs = {n: torch.zeros(self.params[n].numel(), dtype=torch.float64)
                           for n in self.lambda_names()}

    # ------------------------------------------------------------------ masks
    def set_masks(self, masks):
        """Sets {λ group name: 0/1 array}; masked λ entries and their momenta become 0."""
        with torch.no_grad():
            for name, m in masks.items():
                if name not in self.params or not is_lambda(name):
                    raise KeyError(f"twin: mask for unknown λ group {name}")
                p = self.params[name]
                t = torch.as_tensor(m, dtype=self.dtype).reshape(p.shape).clone()
                self.masks[name] = t
                p.mul_(t)
                if name in self.momenta:
                    self.momenta[name].mul_(t)
        self._update_liveness()

    def _mask_list(self, name):
        m = self.masks.get(name)
        n = self.params[name].numel()
        return [1.0] * n if m is None else [float(v) for v in m.reshape(-1).tolist()]

    def _update_liveness(self):
        """Applies the dead-op rule (docs/method.md §6.1) to the masks of every block."""
        L, N = self.L, self.N
        for blocks, red in self.stages:
            for b in blocks:
                rows = {lj: self._mask_list(n) for lj, n in b["rows"].items()}
                after = self._mask_list(b["after"])
                need = {(l, j): after[N * (l - 1) + (j - 1)] for l in range(1, L + 1) for j in range(1, N + 1)}
                for l in range(L, 1, -1):
                    for j in range(1, N + 1):
                        if sum(rows[(l, j)]) == 0:
                            need[(l, j)] = 0.0
                        if need[(l, j)] > 0:
                            for lp in range(1, l):
                                for jp in range(1, N + 1):
                                    need[(lp, jp)] += rows[(l, j)][1 + N * (lp - 1) + (jp - 1)]
                for l in range(1, L + 1):
                    for j in range(1, N + 1):
                        if l > 1 and sum(rows[(l, j)]) == 0:
                            need[(l, j)] = 0.0
                        if need[(l, j)] == 0:
                            after[N * (l - 1) + (j - 1)] = 0.0
                            for m in range(l + 1, L + 1):
                                for n in range(1, N + 1):
                                    rows[(m, n)][1 + N * (l - 1) + (j - 1)] = 0.0
                            if l > 1:
                                rows[(l, j)] = [0.0] * len(rows[(l, j)])
                b["live"] = {lj: need[lj] > 0 for lj in need}
                b["live_after"] = [k for k in range(N * L) if after[k] > 0]
            if red is not None:
                m = self._mask_list(red["lam"])
                red["live"] = [i for i in range(2) if m[i] > 0] or [0, 1]

    # ------------------------------------------------------------------ forward
    def _lam(self, name):
        p = self.params[name]
        m = self.masks.get(name)
        return p if m is None else p * m

    def _scale(self, t, lam, name, i):
        """t·λ[i]; with trace_lambda, backward also sums |∂L/∂λ[i] terms| (see _LambdaScale)."""
        if not self.trace_lambda:
            return t * lam[i]
        return _LambdaScale.apply(t, lam, i, self.lambda_abs[name])

    def _bn_apply(self, x, bn):
        return F.batch_norm(x, bn.mean, bn.var, bn.gamma, bn.beta, self.training, BN_MOMENTUM, BN_EPS)

    def _op(self, a, op):
        kind, dw, pw, bn = op
        if dw is not None:
            a = F.conv2d(a, dw, padding=dw.shape[-1] // 2, groups=a.shape[1])
            a = F.conv2d(a, pw)
        elif kind == "max3":
            a = F.max_pool2d(a, 3, 1, 1)
        else:
            a = F.avg_pool2d(a, 3, 1, 1, count_include_pad=True)
        return F.relu(self._bn_apply(a, bn))

    def _block(self, x, b):
        L, N = self.L, self.N
        live = b["live"]
        nodes = [x]  # node 0 = block input, then h(l, j) level-major
        zero = None
        for l in range(1, L + 1):
            for j in range(1, N + 1):
                if not live[(l, j)]:  # dead op (masks only): no compute, output 0
                    if zero is None:
                        zero = torch.zeros_like(x)
                    nodes.append(zero)
                    continue
                if l == 1:
                    a = x
                else:  # a = Σ_i λ(l,j)[i]·node_i over the nodes of earlier levels
                    rname = b["rows"][(l, j)]
                    r = self._lam(rname)
                    a = self._scale(x, r, rname, 0)
                    for i in range(1, 1 + N * (l - 1)):
                        if nodes[i] is zero:
                            continue
                        if self.trace_lambda:
                            a = a + self._scale(nodes[i], r, rname, i)
                        else:
                            a.addcmul_(nodes[i], r[i])
                nodes.append(self._op(a, b["ops"][(l, j)]))
        if b["idc"] is not None:
            w, bn = b["idc"]
            short = F.relu(self._bn_apply(F.conv2d(x, w), bn))
        else:
            short = x
        if not b["live_after"]:
            return short  # no live output branch: the block is its shortcut
        lam_after = self._lam(b["after"])
        y = None
        for k in b["live_after"]:  # Σ_k W_k (λ_after[k]·h_k), one 1×1 conv per branch
            t = F.conv2d(self._scale(nodes[1 + k], lam_after, b["after"], k), b["outc"][k])
            y = t if y is None else y.add_(t)
        y = F.relu(self._bn_apply(y, b["out_bn"]))
        return y + short

    def _reduction(self, x, red):
        lam = self._lam(red["lam"])
        out = None
        for i in red["live"]:
            w, bn = red["b0"] if i == 0 else red["b1"]
            y = F.relu(self._bn_apply(F.conv2d(x, w, stride=2, padding=w.shape[-1] // 2), bn))
            y = self._scale(y, lam, red["lam"], i)
            out = y if out is None else out + y
        return out

    def forward(self, x):
        for w, stride, bn in self.stem:
            x = F.relu(self._bn_apply(F.conv2d(x, w, stride=stride, padding=1), bn))
        for blocks, red in self.stages:
            for b in blocks:
                x = self._block(x, b)
            if red is not None:
                x = self._reduction(x, red)
        x = F.relu(self._bn_apply(x, self.head_bn))
        x = x.mean(dim=(2, 3))
        return F.linear(x, self.fc_w, self.fc_b)


def build_twin(space_json, dtype=torch.float32, seed=0):
    """Builds the twin of the supergraph described by a SearchSpace JSON dict."""
    return DsoTwin(space_json, dtype=dtype, seed=seed)


def load_dump(model, dsod, strict=True):
    """Copies parameters, BN buffers, λ groups and masks from a DSOD dict by name.

    Records named meta/, input/, out/, grad/, after/ are ignored; `mask/<λ group>`
    records set the masks.  With strict, every model tensor must be present and
    every other record must name a model tensor.  Returns the list of names loaded.
    """
    skip = ("meta/", "input/", "out/", "grad/", "after/", "mask/")
    loaded = []
    with torch.no_grad():
        for name, value in dsod.items():
            if name.startswith(skip):
                continue
            if name in model.params or name in model.buffers_by_name:
                t = model.tensor(name)
                v = torch.as_tensor(value, dtype=model.dtype)
                if v.numel() != t.numel():
                    raise ValueError(f"load_dump: {name}: {tuple(v.shape)} vs model {tuple(t.shape)}")
                t.copy_(v.reshape(t.shape))
                loaded.append(name)
            elif strict:
                raise KeyError(f"load_dump: record {name} names no twin tensor")
    if strict:
        missing = [n for n in list(model.params) + list(model.buffers_by_name) if n not in dsod]
        if missing:
            raise KeyError(f"load_dump: {len(missing)} twin tensors missing in the dump, e.g. {missing[:5]}")
    masks = {n[len("mask/"):]: v for n, v in dsod.items() if n.startswith("mask/")}
    if masks:
        model.set_masks(masks)
    for m in model.momenta.values():
        m.zero_()
    return loaded


# ---------------------------------------------------------------------- steps
def _forward_backward(model, x, y):
    model.train()
    for p in model.params.values():
        p.grad = None
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss


def _set_trainable(model, weights, lambdas):
    for n, p in model.params.items():
        p.requires_grad_(lambdas if is_lambda(n) else weights)


def w_step(model, x, y, lr, momentum=0.9, wd=0.0):
    """One weight step (docs/method.md §4.1–4.2); returns the loss.

    Forward + backward of weights and λ (λ gradients are discarded), elementwise
    clip to ±2, then MXNet NAG on the weights: g ← g + wd·w (only names ending
    in /weight), m ← μm + g, w ← w − lr(g + μm).
    """
    _set_trainable(model, True, True)
    loss = _forward_backward(model, x, y)
    with torch.no_grad():
        for n, w in model.params.items():
            if is_lambda(n) or w.grad is None:
                continue
            g = w.grad.clamp_(-GRAD_CLIP, GRAD_CLIP)
            if wd and n.endswith("/weight"):
                g.add_(w, alpha=wd)
            m = model.momenta.get(n)
            if m is None:
                m = model.momenta[n] = torch.zeros_like(w)
            m.mul_(momentum).add_(g)
            w.add_(g, alpha=-lr).add_(m, alpha=-lr * momentum)
    return loss.item()


def lambda_step(model, x, y, lr, momentum=0.9, gamma=0.0):
    """One λ step (docs/method.md §4.3); returns the loss.

    Weights get no gradient; λ gradients are clipped to ±2, then APG-NAG:
    v ← μv; z ← S_{lr·γ}(λ − lr·g); v ← z − λ + v; λ ← max(0, z + μv).
    `gamma` is a float or {λ group name: float or per-entry tensor}.
    Masked λ entries and their momenta are held at 0.
    """
    _set_trainable(model, False, True)
    loss = _forward_backward(model, x, y)
    with torch.no_grad():
        for n in model.lambda_names():
            lam = model.params[n]
            g = lam.grad
            if g is None:
                g = torch.zeros_like(lam)
            g = g.clamp(-GRAD_CLIP, GRAD_CLIP)
            ge = gamma.get(n, 0.0) if isinstance(gamma, dict) else gamma
            v = model.momenta.get(n)
            if v is None:
                v = model.momenta[n] = torch.zeros_like(lam)
            v.mul_(momentum)
            z = lam - lr * g
            z = torch.sign(z) * torch.clamp(z.abs() - lr * torch.as_tensor(ge, dtype=lam.dtype), min=0.0)
            v.add_(z - lam)
            lam.copy_(z + momentum * v).clamp_(min=0.0)
            mask = model.masks.get(n)
            if mask is not None:
                lam.mul_(mask)
                v.mul_(mask)
    _set_trainable(model, True, True)
    return loss.item()
