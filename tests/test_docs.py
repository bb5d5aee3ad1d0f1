"""Docs that are generated must be current."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def test_cli_reference_is_current():
    from gen_cli_doc import render

    with open(os.path.join(ROOT, "docs", "CLI.md")) as f:
        assert f.read() == render(), "docs/CLI.md is stale: run `python tools/gen_cli_doc.py`"
