"""Parse the graph text form (the printer's output) back into a ``Graph``.

Pass tests are written as "before" and "expected" graphs in this text form, as in TVM's Relax tests:

    graph g(%x: f32[4,8]) -> (%y: f32[4,8]) {
      %a: f32[4,8] = Mul(%x, %one=const f32[] [1])
      %y: f32[4,8] = Relu(%a)  # relu_1
    }

Constants appear at their first use, either with their data (``%c=const f32[2] [0.5, 2]``) or with their
type only (``%W: const f32[16,8]``, or data elided with ``...``): their data then comes from the
``consts`` argument, or, for float tensors, from a generator seeded by the constant's name (uniform in
[0.5, 1.5): positive, so that it is a valid variance or divisor). The trailing ``# name`` comment is
the node's name. A node with a body (a fused group) ends its line with ``{`` and lists the body's nodes
on the following lines, up to a closing ``}``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping

import numpy as np

from ..errors import TensorforgeError
from .dtype import DType
from .graph import Graph, Node, TensorType, Value

_SOURCE = re.compile(r"^(.*?)(?:^|\s\s)@ (.*)$")  # a node comment's name and source location


class ParseError(TensorforgeError):
    """The graph text is malformed (the message gives the line and what was expected)."""


_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t]+)
  | (?P<comment>\#[^\n]*)
  | (?P<nl>\n)
  | (?P<value>%[A-Za-z0-9_.\-]+)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<arrow>->)
  | (?P<number>[-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+|inf|nan)(?![A-Za-z0-9_]))
  | (?P<ellipsis>\.\.\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[()\[\]{},:=<>])
    """,
    re.VERBOSE,
)


class _Tokens:
    def __init__(self, text: str):
        self.toks: list[tuple[str, str, int]] = []
        line = 1
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ParseError(f"line {line}: unexpected character {text[pos]!r}")
            kind = m.lastgroup
            s = m.group()
            if kind == "nl":
                self.toks.append(("nl", s, line))
                line += 1
            elif kind != "ws":
                self.toks.append((kind, s, line))
            pos = m.end()
        self.toks.append(("eof", "", line))
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str, int]:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def skip_nl(self) -> None:
        while self.peek()[0] == "nl":
            self.i += 1

    def at(self, s: str) -> bool:
        return self.peek()[1] == s and self.peek()[0] in ("punct", "arrow", "ident", "ellipsis")

    def expect(self, s: str) -> None:
        kind, tok, line = self.next()
        if tok != s:
            raise ParseError(f"line {line}: expected {s!r}, got {tok!r}")

    def expect_kind(self, kind: str, what: str) -> str:
        k, tok, line = self.next()
        if k != kind:
            raise ParseError(f"line {line}: expected {what}, got {tok!r}")
        return tok

    @property
    def line(self) -> int:
        return self.peek()[2]


class _Parser:
    def __init__(self, text: str, consts: Mapping[str, np.ndarray]):
        self.t = _Tokens(text)
        self.consts = consts
        self.values: dict[str, Value] = {}

    # -- small pieces -------------------------------------------------------------------------------
    def type_(self) -> TensorType:
        name = self.t.expect_kind("ident", "a dtype (f32, i64, ...)")
        try:
            dt = DType.parse(name)
        except TypeError:
            raise ParseError(f"line {self.t.line}: unknown dtype {name!r}") from None
        self.t.expect("[")
        dims: list[int | str] = []
        while not self.t.at("]"):
            k, tok, line = self.t.next()
            if k == "number":
                dims.append(int(tok))
            elif k == "ident":
                dims.append(tok)
            else:
                raise ParseError(f"line {line}: expected a dim, got {tok!r}")
            if self.t.at(","):
                self.t.next()
        self.t.expect("]")
        return TensorType(dt, tuple(dims))

    def scalar(self):
        k, tok, line = self.t.next()
        if k == "number":
            return float(tok) if any(c in tok for c in ".eEn") else int(tok)
        if k == "string":
            return tok[1:-1].encode().decode("unicode_escape")
        if k == "ident" and tok in ("true", "false"):
            return tok == "true"
        raise ParseError(f"line {line}: expected a number, string or bool, got {tok!r}")

    def attr_value(self):
        if self.t.at("const"):  # a tensor attribute, written out in full
            self.t.next()
            type_ = self.type_()
            self.t.expect("[")
            items = []
            while not self.t.at("]"):
                items.append(self.scalar())
                if self.t.at(","):
                    self.t.next()
            self.t.next()
            return self.const_data("attribute", type_, items)
        if self.t.at("["):
            self.t.next()
            items = []
            while not self.t.at("]"):
                items.append(self.attr_value())
                if self.t.at(","):
                    self.t.next()
            self.t.next()
            return tuple(items)
        return self.scalar()

    def attrs(self) -> dict:
        out: dict = {}
        self.t.expect("{")
        while not self.t.at("}"):
            key = self.t.expect_kind("ident", "an attribute name")
            self.t.expect("=")
            out[key] = self.attr_value()
            if self.t.at(","):
                self.t.next()
        self.t.expect("}")
        return out

    # -- values -------------------------------------------------------------------------------------
    def const_data(self, name: str, type_: TensorType, data: list | None) -> np.ndarray:
        if not type_.is_static:
            raise ParseError(f"constant %{name} must have a static shape, got {type_}")
        if data is not None:
            arr = np.asarray(data, dtype=type_.dtype.np)
            if arr.size == 1 and type_.numel != 1:
                arr = np.full(type_.shape, arr.reshape(-1)[0], dtype=type_.dtype.np)
            if arr.size != type_.numel:
                raise ParseError(f"constant %{name}: {arr.size} values given for {type_}")
            return arr.reshape(type_.shape)
        if name in self.consts:
            arr = np.asarray(self.consts[name])
            if arr.dtype != type_.dtype.np or arr.shape != type_.shape:
                raise ParseError(f"constant %{name}: data given is {arr.dtype}{list(arr.shape)}, text says {type_}")
            return arr
        if not type_.dtype.is_float:
            raise ParseError(f"constant %{name} ({type_}) has no data: write it out or pass it in consts")
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        return rng.uniform(0.5, 1.5, type_.shape).astype(type_.dtype.np)

    def operand(self) -> Value | None:
        k, tok, line = self.t.next()
        if k == "ident" and tok == "_":
            return None
        if k != "value":
            raise ParseError(f"line {line}: expected an operand (%name or _), got {tok!r}")
        name = tok[1:]
        if self.t.at("=") or (self.t.at(":") and self.t.peek(1)[1] == "const"):
            inline = self.t.at("=")
            self.t.next()
            self.t.expect("const")
            type_ = self.type_()
            data = None
            if inline and self.t.at("["):
                self.t.next()
                items, elided = [], False
                while not self.t.at("]"):
                    if self.t.peek()[0] == "ellipsis":
                        self.t.next()
                        elided = True
                    else:
                        items.append(self.scalar())
                    if self.t.at(","):
                        self.t.next()
                self.t.next()
                data = None if elided else items
            if name in self.values:
                v = self.values[name]
                if not v.is_const or v.type != type_:
                    raise ParseError(f"line {line}: %{name} redefined as const {type_}")
                return v
            v = Value(name, type_, const=self.const_data(name, type_, data))
            self.values[name] = v
            return v
        if name not in self.values:
            raise ParseError(f"line {line}: %{name} is used before it is defined")
        v = self.values[name]
        if self.t.at(":"):  # an annotated use: check it
            self.t.next()
            type_ = self.type_()
            if type_ != v.type:
                raise ParseError(f"line {line}: %{name} is {v.type}, annotated {type_}")
        return v

    def define(self, name: str, type_: TensorType, line: int) -> Value:
        if name in self.values:
            raise ParseError(f"line {line}: %{name} is defined twice")
        v = Value(name, type_)
        self.values[name] = v
        return v

    # -- nodes and graphs ---------------------------------------------------------------------------
    def node(self) -> Node:
        line = self.t.line
        outs = []
        while True:
            name = self.t.expect_kind("value", "an output %name")[1:]
            self.t.expect(":")
            outs.append((name, self.type_()))
            if not self.t.at(","):
                break
            self.t.next()
        self.t.expect("=")
        op = self.t.expect_kind("ident", "an op name")
        self.t.expect("(")
        ins = []
        while not self.t.at(")"):
            ins.append(self.operand())
            if self.t.at(","):
                self.t.next()
        self.t.expect(")")
        attrs = {}
        if self.t.at("{") and self.t.peek(1)[0] not in ("nl", "comment"):
            attrs = self.attrs()
        body_open = False
        if self.t.at("{"):
            self.t.next()
            body_open = True
        comment, source = "", ""
        if self.t.peek()[0] == "comment":
            comment = self.t.next()[1][1:].strip()
            m = _SOURCE.match(comment)  # 'name  @ file:line in fn: code' (printer.SOURCE_MARK)
            if m:
                comment, source = m.group(1), m.group(2).strip()
        if body_open:
            body = self.body()
            attrs["body"] = tuple(body)
            produced = {v.name: v for n in body for v in n.outputs}
            values = []
            for name, type_ in outs:
                v = produced.get(name)
                if v is None or v.type != type_:
                    raise ParseError(f"line {line}: output %{name}: {type_} is not produced by the body")
                values.append(v)
            return Node(op, tuple(ins), tuple(values), attrs, comment, source)
        values = [self.define(name, type_, line) for name, type_ in outs]
        return Node(op, tuple(ins), tuple(values), attrs, comment, source)

    def body(self) -> list[Node]:
        nodes = []
        self.t.skip_nl()
        while not self.t.at("}"):
            if self.t.peek()[0] == "eof":
                raise ParseError(f"line {self.t.line}: missing '}}'")
            nodes.append(self.node())
            self.t.skip_nl()
        self.t.next()
        return nodes

    def label(self, what: str) -> str:
        """A graph or output name: an identifier, or a quoted string (printer.format_label)."""
        if self.t.peek()[0] == "string":
            tok = self.t.next()[1]
            return tok[1:-1].encode().decode("unicode_escape")
        return self.t.expect_kind("ident", what)

    def graph(self) -> Graph:
        self.t.skip_nl()
        self.t.expect("graph")
        name = self.label("the graph name")
        self.t.expect("(")
        inputs = []
        while not self.t.at(")"):
            line = self.t.line
            vname = self.t.expect_kind("value", "an input %name")[1:]
            self.t.expect(":")
            inputs.append(self.define(vname, self.type_(), line))
            if self.t.at(","):
                self.t.next()
        self.t.expect(")")
        self.t.expect("->")
        self.t.expect("(")
        out_refs = []
        while not self.t.at(")"):
            oname = None
            if self.t.peek()[0] in ("ident", "string"):
                oname = self.label("an output name")
                self.t.expect("=")
            line = self.t.line
            if self.t.peek(1)[1] == "=" or self.t.peek(2)[1] == "const":
                v = self.operand()
                out_refs.append((oname, v.name, v.type, line))
                if self.t.at(","):
                    self.t.next()
                continue
            vname = self.t.expect_kind("value", "an output %name")[1:]
            type_ = None
            if self.t.at(":"):
                self.t.next()
                type_ = self.type_()
            out_refs.append((oname, vname, type_, line))
            if self.t.at(","):
                self.t.next()
        self.t.expect(")")
        self.t.expect("{")
        if self.t.peek()[0] == "comment":
            self.t.next()
        nodes = self.body()
        self.t.skip_nl()
        if self.t.peek()[0] != "eof":
            raise ParseError(f"line {self.t.line}: text after the graph: {self.t.peek()[1]!r}")
        outputs, names = [], []
        for oname, vname, type_, line in out_refs:
            v = self.values.get(vname)
            if v is None:
                raise ParseError(f"line {line}: graph output %{vname} is never defined")
            if type_ is not None and type_ != v.type:
                raise ParseError(f"line {line}: graph output %{vname} is {v.type}, annotated {type_}")
            outputs.append(v)
            names.append(oname or vname)
        return Graph(nodes, inputs, outputs, name=name, output_names=names)


def parse_graph(text: str, consts: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Parse the printer's text form of a graph (see the module docstring)."""
    return _Parser(text, consts or {}).graph()
