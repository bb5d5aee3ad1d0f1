"""The explorer's pages in a real headless browser (Debian's chromium + chromium-driver, driven by selenium;
`make browser` / tools/install_browser.sh installs them): no console errors, the graph renders, picking a
kernel shows its assembly with the hot loop, the roofline has one point per kernel, two builds compare side by
side. Skipped, with the reason, where the browser or selenium is missing."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.examples import small_cnn

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (BROWSER and DRIVER),
    reason="no headless browser: run tools/install_browser.sh (apt install chromium chromium-driver, as root)",
)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        opts.add_argument(a)
    opts.binary_location = BROWSER
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield d
    d.quit()


def _open(d, path: str) -> None:
    d.get("file://" + os.path.abspath(path))
    _wait(d, "return document.readyState === 'complete'")


def _wait(d, script: str, timeout: float = 10.0):
    end = time.time() + timeout
    while time.time() < end:
        got = d.execute_script(script)
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def _errors(d) -> list:
    return [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def test_report_in_a_browser(browser, tmp_path):
    m = tfg.compile(small_cnn(batch=1))
    path = m.explore(str(tmp_path / "r.html"), repeat=3)
    _open(browser, path)
    # the graph renders: one box per top-level node, laid out with a real size
    boxes = browser.find_elements("css selector", "#graph-svg .gnode")
    assert len(boxes) == len(m.graph.nodes)
    assert all(b.size["width"] > 50 and b.size["height"] > 10 for b in boxes)
    # the roofline has one point per kernel
    assert len(browser.find_elements("css selector", "#roofline circle.pt")) == len(m.kernels)
    # the slowest kernel is shown at first; clicking another kernel's box shows that kernel's assembly
    first = _wait(browser, "return document.getElementById('kpanel').dataset.kernel")
    other = next(b for b in boxes if b.get_attribute("data-kernel") not in ("", first))
    name = other.get_attribute("data-kernel")
    other.click()
    assert browser.execute_script("return document.getElementById('kpanel').dataset.kernel") == name
    asm = _wait(
        browser, "var p=document.querySelector('#kpanel .pane[data-pane=asm] .lz.ready');return p && p.innerText"
    )
    assert asm.lstrip().startswith(f"{name}:")
    assert "sel" in other.get_attribute("class")
    # the conv kernel (picked from the roofline) marks its hot loop and jumps to it
    conv = next(k.name for k in m.kernels if "Conv" in k.name)
    browser.find_element("css selector", f'#roofline circle.pt[data-kernel="{conv}"]').click()
    _wait(browser, "return document.querySelector('#kpanel .pane[data-pane=asm] .lz.ready .hot0')")
    assert "vector FMAs" in browser.find_element("css selector", "#kpanel .summary").text
    browser.find_element("css selector", "#kpanel button.jump").click()
    # other listings unpack when their tab is picked
    browser.find_element("css selector", '#kpanel .tabs button[data-pane="llvm"]').click()
    llvm = _wait(
        browser, "var p=document.querySelector('#kpanel .pane[data-pane=llvm] .lz.ready');return p && p.innerText"
    )
    assert "define" in llvm
    assert _errors(browser) == []


def test_compare_in_a_browser(browser, tmp_path):
    path = tfg.explore(small_cnn(batch=1), tmp_path / "c.html", compare=[{"opt_level": 0}, {"opt_level": 2}], repeat=2)
    _open(browser, path)
    rows = browser.find_elements("css selector", "tr.krow")
    assert len(rows) >= 3
    rows[-1].click()
    rows[0].click()
    _wait(browser, "return document.querySelectorAll('#kpanel .cmp .col').length === 2")
    cols = _wait(browser, "return document.querySelectorAll('#kpanel .cmp .pane[data-pane=asm] .lz.ready').length")
    assert cols == 2
    assert len(browser.find_elements("css selector", "svg.roofline")) == 2
    assert _errors(browser) == []


def test_torch_sources_and_family_roofs_in_a_browser(browser, tmp_path):
    """A torch.export model's page: the kernel panel shows each node's source line; an int8 QDQ model's page
    draws its int8 roof (where the host has an int8 dot-product instruction) with one point per kernel."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
    m = tfg.from_torch(net, (torch.randn(1, 3, 12, 12),))
    _open(browser, m.explore(str(tmp_path / "t.html"), repeat=2))
    conv = next(k.name for k in m.kernels if "conv" in k.name.lower())
    browser.find_element("css selector", f'#roofline circle.pt[data-kernel="{conv}"]').click()
    src = _wait(browser, "var s=document.querySelector('#kpanel .members .src');return s && s.innerText")
    assert src.startswith("@ ") and ".py:" in src
    assert _errors(browser) == []

    from tensorforge.explore.page import render
    from tensorforge.runtime.peak import machine_peak
    from test_explore_peaks import _profiled_report, _quantized

    q = tfg.compile(str(_quantized(tmp_path, np.random.default_rng(2))))
    r = _profiled_report(q, machine_peak())
    page = tmp_path / "q.html"
    page.write_text(render(r))
    _open(browser, str(page))
    assert len(browser.find_elements("css selector", "#roofline circle.pt")) == len(r.kernels)
    roofs = browser.find_elements("css selector", "#roofline path.roof[data-family]")
    assert sorted(x.get_attribute("data-family") for x in roofs) == sorted(r.families)
    assert _errors(browser) == []
