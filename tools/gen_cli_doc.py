"""Regenerate docs/CLI.md from the argparse definitions (a test checks it is current)."""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def render() -> str:
    os.environ["COLUMNS"] = "100"
    from tensorforge.cli import build_parser

    p = build_parser()
    out = ["# Command-line reference", "",
           "Generated from the command's own `--help` by `python tools/gen_cli_doc.py`; do not edit by hand.", "",
           "```", p.format_help().rstrip(), "```", ""]  # fmt: skip
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in sub.choices.items():
        out += [f"## tensorforge {name}", "", "```", sp.format_help().rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    text = render()
    path = os.path.join(ROOT, "docs", "CLI.md")
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")
    sys.exit(0)
