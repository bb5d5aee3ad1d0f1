"""RNN, GRU and LSTM, imported by unrolling over the (static) sequence length.

The input projection of every time step is one GEMM before the loop (``X @ Wᵀ + biases`` for all steps
at once); each step then adds ``H @ Rᵀ`` and applies the gate activations, so a step is a small GEMM
plus elementwise work that the fusion pass merges into its epilogue. ``sequence_lens`` shorter than the
sequence masks the state (it stops changing past a sequence's end, and the outputs there are zero), which
also gives the reverse direction its per-sequence starting point. Gate orders, activations (with their
alpha/beta), ``clip``, ``linear_before_reset`` (GRU), ``input_forget`` and peepholes (LSTM), ``layout``
and the three directions follow the ONNX definitions.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError, node_context
from ..ir.graph import Value
from .onnx import Importer, converter

_DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_TAKES_ALPHA = {"Affine": 2, "LeakyRelu": 1, "ThresholdedRelu": 1, "ScaledTanh": 2, "HardSigmoid": 2, "Elu": 1}


class _Unroller:
    def __init__(self, imp: Importer, name: str, op: str, inputs: list[Value | None], attrs: dict):
        self.imp, self.name, self.op, self.attrs = imp, name, op, attrs
        self.k = 0
        x, w, r = inputs[:3]
        self.dt = x.type.dtype.np
        if int(attrs.get("layout", 0)):
            x = self.e("Transpose", [x], {"perm": [1, 0, 2]})
        self.x = x
        self.w, self.r = w, r
        self.bias = inputs[3] if len(inputs) > 3 else None
        self.lens = inputs[4] if len(inputs) > 4 else None
        self.h0 = inputs[5] if len(inputs) > 5 else None
        self.c0 = inputs[6] if len(inputs) > 6 and op == "LSTM" else None
        self.peep = inputs[7] if len(inputs) > 7 and op == "LSTM" else None
        if int(attrs.get("layout", 0)):
            self.h0 = None if self.h0 is None else self.e("Transpose", [self.h0], {"perm": [1, 0, 2]})
            self.c0 = None if self.c0 is None else self.e("Transpose", [self.c0], {"perm": [1, 0, 2]})
        shape = x.type.shape
        if not all(isinstance(d, int) for d in shape):
            self.fail(f"needs a static sequence length and batch, got X{list(shape)}")
        self.T, self.B = shape[0], shape[1]
        self.H = int(attrs["hidden_size"])
        self.dirs = {"forward": ["f"], "reverse": ["r"], "bidirectional": ["f", "r"]}[attrs.get("direction", "forward")]
        acts = list(attrs.get("activations") or _DEFAULT_ACTS[op] * len(self.dirs))
        alphas, betas = list(attrs.get("activation_alpha") or []), list(attrs.get("activation_beta") or [])
        self.acts = []
        for a in acts:
            n = _TAKES_ALPHA.get(a, 0)
            al = alphas.pop(0) if n >= 1 and alphas else None
            be = betas.pop(0) if n >= 2 and betas else None
            self.acts.append((a, al, be))
        self.clip = attrs.get("clip")
        self.mask_needed = self.lens is not None and not (
            self.lens.is_const and bool(np.all(np.asarray(self.lens.const) == self.T)))

    # -- emission helpers ---------------------------------------------------------------------------
    def fail(self, msg):
        raise UnsupportedError(f"{node_context(self.imp.name, self.name, self.op)}: {msg}")

    def e(self, op: str, ins, attrs=None) -> Value:
        self.k += 1
        return self.imp.emit(op, list(ins), dict(attrs or {}), f"{self.name}/{op}_{self.k}")[0]

    def c(self, arr) -> Value:
        return self.imp.const(np.asarray(arr), f"{self.name}_c")

    def take(self, v: Value, i: int, axis: int = 0) -> Value:
        return self.e("Gather", [v, self.c(np.array(i, np.int64))], {"axis": axis})

    def cols(self, v: Value, g: int) -> Value:
        """Gate ``g`` (columns g*H..(g+1)*H) of a [.., G*H] tensor."""
        return self.e("Slice", [v, self.c(np.array([g * self.H], np.int64)), self.c(np.array([(g + 1) * self.H],
                                np.int64)), self.c(np.array([-1], np.int64))])  # fmt: skip

    def act(self, k: int, x: Value) -> Value:
        name, al, be = self.acts[k]
        if name in ("Tanh", "Sigmoid", "Relu", "Softsign", "Softplus"):
            return self.e(name, [x])
        if name == "Affine":
            return self.e("Add", [self.e("Mul", [x, self.c(np.array(al, self.dt))]), self.c(np.array(be, self.dt))])
        if name == "ScaledTanh":
            t = self.e("Tanh", [self.e("Mul", [x, self.c(np.array(be, self.dt))])])
            return self.e("Mul", [t, self.c(np.array(al, self.dt))])
        if name in ("LeakyRelu", "ThresholdedRelu", "Elu"):
            return self.e(name, [x], {} if al is None else {"alpha": float(al)})
        if name == "HardSigmoid":
            kw = {} if al is None else {"alpha": float(al)}
            if be is not None:
                kw["beta"] = float(be)
            return self.e("HardSigmoid", [x], kw)
        self.fail(f"activation {name!r} is not supported")

    def clipped(self, x: Value) -> Value:
        if self.clip is None:
            return x
        c = float(self.clip)
        return self.e("Clip", [x, self.c(np.array(-c, self.dt)), self.c(np.array(c, self.dt))])

    # -- the recurrence -----------------------------------------------------------------------------
    def direction(self, d: int, reverse: bool) -> tuple[list[Value], Value, Value | None]:
        H, G = self.H, _GATES[self.op]
        w, r = self.take(self.w, d), self.take(self.r, d)  # [G*H, I], [G*H, H]
        xw = self.e("MatMul", [self.x, self.e("Transpose", [w], {"perm": [1, 0]})])  # [T, B, G*H]
        rt_h = None
        if self.op == "GRU" and not int(self.attrs.get("linear_before_reset", 0)):
            # the h gate multiplies (r ⊙ H) by its weights: keep them apart from the z and r gates'
            rt_h = self.e("Transpose", [self.rows(r, 2 * H, 3 * H)], {"perm": [1, 0]})
            r = self.rows(r, 0, 2 * H)
        rt = self.e("Transpose", [r], {"perm": [1, 0]})  # [H, G*H]
        rb = None
        if self.bias is not None:
            b = self.take(self.bias, d)  # [2*G*H]
            wb = self.e("Slice", [b, self.c(np.array([0], np.int64)), self.c(np.array([G * H], np.int64))])
            rb = self.e("Slice", [b, self.c(np.array([G * H], np.int64)), self.c(np.array([2 * G * H], np.int64))])
            if self.op == "GRU" and int(self.attrs.get("linear_before_reset", 0)):
                xw = self.e("Add", [xw, wb])  # Rb's h gate stays inside the reset product
            else:
                xw = self.e("Add", [xw, self.e("Add", [wb, rb])])
                rb = None
        zeros = self.c(np.zeros((self.B, H), self.dt))
        h = zeros if self.h0 is None else self.take(self.h0, d)
        c = None
        if self.op == "LSTM":
            c = zeros if self.c0 is None else self.take(self.c0, d)
        peep = None if self.peep is None else self.take(self.peep, d)
        ka = d * len(_DEFAULT_ACTS[self.op])  # this direction's activations
        ys: list[Value | None] = [None] * self.T
        steps = range(self.T - 1, -1, -1) if reverse else range(self.T)
        for t in steps:
            gates_x = self.take(xw, t)  # [B, G*H]
            hr = self.e("MatMul", [h, rt])
            if self.op == "RNN":
                h_new = self.act(ka, self.clipped(self.e("Add", [gates_x, hr])))
                c_new = None
            elif self.op == "GRU":
                h_new, c_new = self.gru_step(ka, gates_x, hr, h, rb, rt_h), None
            else:
                h_new, c_new = self.lstm_step(ka, self.e("Add", [gates_x, hr]), c, peep)
            if self.mask_needed:
                m = self.e("Less", [self.c(np.array(t, self.lens.type.dtype.np)), self.lens])  # [B]
                m = self.e("Unsqueeze", [m, self.c(np.array([1], np.int64))])  # [B, 1]
                ys[t] = self.e("Where", [m, h_new, zeros])
                h = self.e("Where", [m, h_new, h])
                if c is not None:
                    c = self.e("Where", [m, c_new, c])
            else:
                ys[t], h, c = h_new, h_new, c_new
        return ys, h, c

    def rows(self, v: Value, lo: int, hi: int) -> Value:
        return self.e("Slice", [v, self.c(np.array([lo], np.int64)), self.c(np.array([hi], np.int64))])

    def gru_step(self, ka: int, gx: Value, hr: Value, h: Value, rb: Value | None, rt_h: Value | None) -> Value:
        lbr = int(self.attrs.get("linear_before_reset", 0))
        f, g = ka, ka + 1
        zr = [self.e("Add", [self.cols(gx, k), self.cols(hr, k)]) for k in (0, 1)]
        if rb is not None:  # linear_before_reset with a bias: Rb stays separate (its h part is reset)
            zr = [self.e("Add", [v, self.cols(rb, k)]) for k, v in enumerate(zr)]
        z, rr = (self.act(f, self.clipped(v)) for v in zr)
        if lbr:  # h~ = g(X Wh + r ⊙ (H Rhᵀ + Rbh) + Wbh)
            hh = self.cols(hr, 2) if rb is None else self.e("Add", [self.cols(hr, 2), self.cols(rb, 2)])
            cand = self.act(g, self.clipped(self.e("Add", [self.cols(gx, 2), self.e("Mul", [rr, hh])])))
        else:
            rh = self.e("Mul", [rr, h])
            cand = self.act(g, self.clipped(self.e("Add", [self.cols(gx, 2), self.e("MatMul", [rh, rt_h])])))
        one_minus_z = self.e("Sub", [self.c(np.array(1, self.dt)), z])
        return self.e("Add", [self.e("Mul", [one_minus_z, cand]), self.e("Mul", [z, h])])

    def lstm_step(self, ka: int, gates: Value, c: Value, peep: Value | None):
        f, g, hact = ka, ka + 1, ka + 2
        pre = [self.cols(gates, k) for k in range(4)]  # i, o, f, c

        def peephole(x, k, cell):
            if peep is None:
                return x
            p = self.e("Slice", [peep, self.c(np.array([k * self.H], np.int64)),
                                 self.c(np.array([(k + 1) * self.H], np.int64))])  # fmt: skip
            return self.e("Add", [x, self.e("Mul", [p, cell])])

        i = self.act(f, self.clipped(peephole(pre[0], 0, c)))
        if int(self.attrs.get("input_forget", 0)):
            fg = self.e("Sub", [self.c(np.array(1, self.dt)), i])
        else:
            fg = self.act(f, self.clipped(peephole(pre[2], 2, c)))
        cand = self.act(g, self.clipped(pre[3]))
        c_new = self.e("Add", [self.e("Mul", [fg, c]), self.e("Mul", [i, cand])])
        o = self.act(f, self.clipped(peephole(pre[1], 1, c_new)))
        return self.e("Mul", [o, self.act(hact, c_new)]), c_new

    def run(self, outputs: list[str]) -> list[Value | None]:
        ys_all, hs, cs = [], [], []
        for d, kind in enumerate(self.dirs):
            ys, h, c = self.direction(d, kind == "r")
            y = self.e("Concat", [self.e("Unsqueeze", [v, self.c(np.array([0], np.int64))]) for v in ys], {"axis": 0})
            ys_all.append(self.e("Unsqueeze", [y, self.c(np.array([1], np.int64))]))  # [T, 1, B, H]
            hs.append(self.e("Unsqueeze", [h, self.c(np.array([0], np.int64))]))
            if c is not None:
                cs.append(self.e("Unsqueeze", [c, self.c(np.array([0], np.int64))]))
        y = ys_all[0] if len(ys_all) == 1 else self.e("Concat", ys_all, {"axis": 1})
        yh = hs[0] if len(hs) == 1 else self.e("Concat", hs, {"axis": 0})
        yc = (cs[0] if len(cs) == 1 else self.e("Concat", cs, {"axis": 0})) if cs else None
        if int(self.attrs.get("layout", 0)):
            y = self.e("Transpose", [y], {"perm": [2, 0, 1, 3]})
            yh = self.e("Transpose", [yh], {"perm": [1, 0, 2]})
            yc = None if yc is None else self.e("Transpose", [yc], {"perm": [1, 0, 2]})
        vals = [y, yh, yc]
        outs = []
        for k, oname in enumerate(outputs):
            if not oname:
                outs.append(None)
                continue
            outs += self.imp.emit("Identity", [vals[k]], {}, f"{self.name}/out{k}", [oname])
        return outs


def _recurrent(op: str):
    def conv(imp: Importer, name, n, inputs, attrs):
        return _Unroller(imp, name, op, inputs, attrs).run(list(n.output))

    return conv


for _op in ("RNN", "GRU", "LSTM"):
    converter(_op)(_recurrent(_op))
