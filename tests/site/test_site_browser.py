"""The built site as a person sees it: headless Chromium opens it from disk, offline, and from a
local static server (run pages load their completions from the suite's items file, which a page
opened from disk may not read): `pefthub site serve`'s, which answers HTTP Range requests as
static hosts do, and Python's own, which ignores them and sends the whole file.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and ``playwright`` from PyPI (the
``test`` extra); Playwright drives the system browser through ``executable_path``, so no browser
is ever downloaded. Screenshots land in ``<build dir>/screenshots/`` for CI artifacts; set
``PEFTHUB_SITE_SCREENSHOTS=<dir>`` to build there instead of a temp dir and keep them.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import random
import re
import shutil
import threading
from pathlib import Path

import pytest

from pefthub.commands import site_command
from pefthub.site import build_site
from pefthub import results
from test_site import XSS_METHOD, _config, write_demo_leaderboards, write_run

CHROMIUM = os.environ.get("PEFTHUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)


class RangeHandler(site_command.RangeHandler):
    """``pefthub site serve``'s handler (it answers HTTP Range requests, as static hosts do), recording
    every range it served."""

    served: list[tuple[str, int, int]] = []

    def log_message(self, *args):
        pass

    def send_response(self, code, message=None):
        if code == 206:
            wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range") or "")
            self.served.append((self.path, int(wanted[1]), int(wanted[2])))
        super().send_response(code, message)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def serve():
    """``serve(directory, handler)`` -> the base URL of a static server for ``directory`` on loopback."""
    servers = []

    def start(directory: Path, handler=RangeHandler) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def load_completions(page, expected: int) -> None:
    """Ask a run page for its completions and wait until all ``expected`` are listed."""
    button = page.locator("button.load-items")
    assert f"Show the {expected} completions" == button.inner_text()
    button.click()
    # Locators wait without evaluating strings, which the page's CSP (no 'unsafe-eval') would refuse.
    page.locator("ol.samples > li").nth(expected - 1).wait_for()
    assert page.locator("ol.samples > li").count() == expected


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = os.environ.get("PEFTHUB_SITE_SCREENSHOTS")
    work = Path(base) if base else tmp_path_factory.mktemp("browser")
    root = work / "leaderboards"
    if root.exists():
        shutil.rmtree(root)
    expected = write_demo_leaderboards(root)
    expected["collapsed_run"] = write_collapsed_run(root / expected["suite"] / "results")
    expected["plot_points"] += 1
    expected["table_rows"] += 1
    out = work / "site"
    build_site(root, out)
    (out / "screenshots").mkdir()
    return out, expected


def write_collapsed_run(results_dir: Path) -> str:
    """A made-up collapsed run added to the demo (test input): 35 of 40 completions "The.The.The…"
    with no extractable answer, 1 correct. Returns its run id."""
    doc = write_run(results_dir, random.Random(7), method="prompt_tuning", trainer="grpo", params=4608, lr=1e-2,
                    test_correct=1, method_config={"num_virtual_tokens": 8})
    samples = [{"split": "test", "id": f"basic_arithmetic-test-{i}", "prompt": f"What is {i} + {i}?",
                "completion": "The." * 20 if i < 35 else f"The answer is {2 * i}.",
                "extracted": None if i < 35 else str(2 * i + (0 if i == 39 else 1)), "gold": str(2 * i),
                "correct": i == 39} for i in range(40)]
    results.write_result(results_dir, doc, samples)
    return doc["run_id"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir every run
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        yield context
        context.close()


class Watch:
    """Console errors, uncaught exceptions and every request a page makes."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"requestfailed: {r.url} {r.failure}"))
        page.on("request", lambda r: self.requests.append(r.url))

    def check(self, origin: str = ""):
        assert self.errors == []
        own = ("file://", "data:", "blob:") + ((origin,) if origin else ())
        remote = [u for u in self.requests if not u.startswith(own)]
        assert remote == [], "the site must work offline (nothing but its own files)"


def accuracy_order(page) -> list[float | None]:
    cells = page.locator("table.board tbody tr td:nth-child(5)")
    values = cells.evaluate_all("cells => cells.map(c => c.getAttribute('data-sort'))")
    return [float(v) if v else None for v in values]


def test_index_plot_sort_filter_and_run_page(site, browser, serve):
    out, expected = site
    shots = out / "screenshots"
    origin = serve(out)
    RangeHandler.served.clear()
    page = browser.new_page()
    watch = Watch(page)
    page.goto(origin + "index.html")
    page.wait_for_load_state("load")

    # The headline plot rendered with one marker per configuration, and the other two charts exist.
    assert page.locator("svg.params-plot").count() == 1
    assert page.locator("svg.params-plot .pt").count() == expected["plot_points"]
    assert page.locator("svg.params-plot .base-ref .base-line").count() == 1
    assert page.locator("svg.pareto-plot").count() == 2
    box = page.locator("svg.params-plot").bounding_box()
    assert box["width"] > 600 and box["height"] > 250  # laid out, not collapsed
    page.screenshot(path=str(shots / "index.png"), full_page=True)
    page.locator("svg.params-plot").screenshot(path=str(shots / "params-plot.png"))

    # The header says which column is accuracy; sorting it orders the rows both ways.
    header = page.locator("table.board thead th").nth(4)
    assert header.get_attribute("data-key") == "accuracy"
    rows = page.locator("table.board tbody tr")
    assert rows.count() == expected["table_rows"]
    header.locator("button").click()
    assert header.get_attribute("aria-sort") == "descending"
    values = accuracy_order(page)
    assert values == sorted(values, reverse=True) and len(set(values)) > 3
    header.locator("button").click()
    assert header.get_attribute("aria-sort") == "ascending"
    values = accuracy_order(page)
    assert values == sorted(values)
    # Params ascend first (fewer is better), the base row sorts with the rest.
    params = page.locator("table.board thead th").nth(2)
    params.locator("button").click()
    assert params.get_attribute("aria-sort") == "ascending"
    page.locator("table.board").screenshot(path=str(shots / "table-sorted.png"))

    # Filtering hides rows but keeps the base reference row.
    page.locator(".trainer-filter").select_option("grpo")
    visible = page.locator("table.board tbody tr:not([hidden])")
    trainers = visible.evaluate_all("rows => rows.map(r => r.getAttribute('data-trainer'))")
    assert set(trainers) == {"grpo", "none"} and "none" in trainers
    page.locator(".trainer-filter").select_option("")
    page.locator(".table-filter").fill("tinylora")
    methods = visible.evaluate_all("rows => rows.map(r => r.getAttribute('data-method'))")
    assert set(methods) == {"tinylora", "tinylora_structured", "base"}
    page.locator(".table-filter").fill("")
    assert page.locator("table.board tbody tr:not([hidden])").count() == expected["table_rows"]

    # The hostile method name shows as text, in the table and nowhere as an element.
    assert page.get_by_text(XSS_METHOD, exact=True).count() >= 1
    assert page.locator("b").count() == 0

    # A run page opens from the table: TinyLoRA/GRPO at 13 parameters, the validation-selected rate.
    selected = results.run_id(_config("tinylora", "grpo", 13, 1e-3, 0, method_config={"r": 2, "u": 13, "weight_tying": 1.0}))
    link = page.locator(f"table.board tbody a[href='runs/demo/{selected}.html']")
    assert link.count() == 1
    link.click()
    page.wait_for_load_state("load")
    assert "/runs/demo/" in page.url
    assert "tinylora" in page.locator("h1").inner_text()
    assert page.locator("svg.curve-plot").count() >= 4  # reward, loss, lr, log-prob gap
    assert page.locator("svg.curve-plot .pt").count() > 0
    assert page.locator("svg.curve-plot .pt title").first.text_content().startswith("Reward by step: 1: ")
    load_completions(page, 40)
    samples = page.locator("ol.samples > li")
    # Only this run's member and its items table came from the items file, not the whole file.
    items_file = out / "data" / "demo" / "items.jsonl.gz"
    ranges = [(start, end) for path, start, end in RangeHandler.served if path.endswith("items.jsonl.gz")]
    assert len(ranges) == 2 and sum(e - s + 1 for s, e in ranges) < items_file.stat().st_size / 4
    page.locator("button[data-show='correct']").click()
    shown = page.locator("ol.samples > li:not([hidden])")
    assert shown.count() == 16
    assert shown.evaluate_all("items => items.every(i => i.classList.contains('correct'))")
    page.locator("button[data-show='all']").click()
    first = samples.first
    first.locator("summary").click()
    assert "<script>alert(1)</script>" in first.locator("pre.text").nth(1).inner_text()  # shown, inert
    page.screenshot(path=str(shots / "run.png"), full_page=True)

    # A failed run's page shows its error.
    page.goto(origin + "index.html")
    page.locator("table.failures a").first.click()
    page.wait_for_load_state("load")
    assert page.locator(".error-box").count() == 1
    page.screenshot(path=str(shots / "failed-run.png"), full_page=True)

    watch.check(origin)
    page.close()
    assert len(list(shots.glob("*.png"))) >= 5


def test_run_page_downloads_and_hosts_without_range(site, browser, serve, tmp_path):
    """A server that ignores Range (Python's own) sends the whole items file once; the page slices it.
    The result JSON and samples JSONL downloads are the run's document and records as stored."""
    out, expected = site
    origin = serve(out, QuietHandler)
    run_id = expected["collapsed_run"]
    page = browser.new_page()
    watch = Watch(page)
    page.goto(f"{origin}runs/demo/{run_id}.html")
    page.wait_for_load_state("load")
    load_completions(page, 40)
    assert page.locator("ol.samples > li.correct").count() == 1
    with page.expect_download() as info:
        page.locator("a.item-download[data-kind='result']").click()
    saved = tmp_path / "result.json"
    info.value.save_as(saved)
    stored = results.read_result(results.result_path(out.parent / "leaderboards" / "demo" / "results", run_id))
    assert info.value.suggested_filename == f"{run_id}.json"
    assert json.loads(saved.read_text(encoding="utf-8")) == stored
    with page.expect_download() as info:
        page.locator("a.item-download[data-kind='samples']").click()
    info.value.save_as(tmp_path / "samples.jsonl")
    got = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    want = results.read_samples(results.samples_path(out.parent / "leaderboards" / "demo" / "results", run_id),
                                lm_eval_ids=False)
    assert got == want
    watch.check(origin)
    page.close()


def test_a_run_page_opened_from_disk_says_how_to_see_its_completions(site, browser):
    out, expected = site
    page = browser.new_page()
    page.goto((out / "runs" / "demo" / f"{expected['collapsed_run']}.html").as_uri())
    page.wait_for_load_state("load")
    assert page.locator("svg.curve-plot").count() >= 1  # the charts need no request
    page.locator("button.load-items").click()
    status = page.locator(".items-status")
    page.locator(".items-status", has_text="Could not load the completions").wait_for()
    assert "web server" in status.inner_text() and "pefthub site serve" in status.inner_text()
    page.close()


def test_compare_view_pairs_trainers_and_refuses_different_items(site, browser):
    out, _ = site
    page = browser.new_page()
    watch = Watch(page)
    page.goto((out / "index.html").as_uri())
    page.wait_for_load_state("load")
    table = page.locator("#suite-demo-compare-table")
    assert table.is_visible()
    # tinylora@13: GRPO 16/40 (the validation-selected rate) vs SFT 12/40 on the same 40 items.
    pair = table.locator("tr.pair", has_text="tinylora@13/grpo")
    assert pair.count() == 1 and "tinylora@13/sft" in pair.inner_text()
    assert pair.locator("td.delta").inner_text() == "+10.0"
    # Two-seed LoRA/GRPO against one-seed LoRA/SFT: paired all the same.
    lora = table.locator("tr.pair", has_text="lora@27648/grpo")
    assert lora.locator("td.delta").inner_text() == "+13.8"          # (21 + 24) / 80 − 17 / 40
    assert table.locator("tr.pair").count() == 5                    # full/grpo vs each unselected SFT rate
    # Every trained row shows its paired interval under Δ vs base.
    delta_subs = page.locator("table.board tbody tr:not(.ref) td:nth-child(6) .sub").all_inner_texts()
    assert delta_subs and all(t.startswith("[") for t in delta_subs)
    assert page.locator("table.findings tbody tr").count() == 9
    page.locator("#suite-demo-compare-table").screenshot(path=str(out / "screenshots" / "compare.png"))
    watch.check()
    page.close()


def test_health_badge_and_filter(site, browser):
    """A collapsed run shows a red badge on its row and its page; the Health filter hides flagged
    rows (never the base row) and can show only them."""
    out, expected = site
    page = browser.new_page()
    watch = Watch(page)
    page.goto((out / "index.html").as_uri())
    page.wait_for_load_state("load")
    rows = page.locator("table.board tbody tr")
    link = f"runs/demo/{expected['collapsed_run']}.html"
    row = page.locator("table.board tbody tr", has=page.locator(f"a[href='{link}']"))
    badge = row.locator(".badge.flag.error")
    assert badge.inner_text() == "collapsed" and badge.is_visible()
    assert "no extractable answer in 35/40 (base 0/40)" in badge.get_attribute("title")
    flagged = rows.evaluate_all("rows => rows.filter(r => r.getAttribute('data-flags')).length")
    assert flagged >= 1

    # The learning rate chosen at the low edge of its grid (tinylora@13/grpo: 1e-3 of 1e-3, 5e-3) has a badge.
    edge = page.locator("table.board tbody tr td .badge.lr-edge")
    assert edge.count() == 1 and edge.inner_text() == "low edge" and edge.is_visible()
    assert "smallest of the 2 rates tried" in edge.get_attribute("title")

    page.locator(".health-filter").select_option("hide")
    assert row.is_hidden()
    visible = page.locator("table.board tbody tr:not([hidden])")
    assert visible.count() == expected["table_rows"] - flagged
    assert visible.evaluate_all("rows => rows.every(r => !r.getAttribute('data-flags'))")
    assert page.locator("table.board tbody tr.ref:not([hidden])").count() == 1
    page.locator(".health-filter").select_option("only")
    assert row.is_visible() and visible.count() == flagged + 1  # + the base row
    page.locator(".health-filter").select_option("")
    assert visible.count() == expected["table_rows"]

    row.locator(f"a[href='{link}']").click()
    page.wait_for_load_state("load")
    assert page.locator("h1 .badge.flag.error").inner_text() == "collapsed"
    assert "no extractable answer in 35/40" in page.locator("section.health").inner_text()
    watch.check()
    page.close()


def test_content_security_policy_blocks_an_inline_script_that_slipped_through(site, browser):
    """Escaping is the defence; the page's CSP is the second wall. Plant an inline script in a
    copy of the index (as a missed escape would) and check the browser refuses to run it while
    the site's own script still runs."""
    out, _ = site
    planted = out / "planted.html"
    page_html = (out / "index.html").read_text(encoding="utf-8")
    planted.write_text(page_html.replace("<main", "<script>document.title = 'pwned';</script><main", 1), encoding="utf-8")
    page = browser.new_page()
    messages = []
    page.on("console", lambda m: messages.append(m.text))
    try:
        page.goto(planted.as_uri())
        page.wait_for_load_state("load")
        assert page.title() != "pwned"
        assert any("Content Security Policy" in m for m in messages), messages
        header = page.locator("table.board thead th").nth(4)
        header.locator("button").click()  # site.js (an allowed local file) still works
        assert header.get_attribute("aria-sort") == "descending"
    finally:
        page.close()
        planted.unlink()


REPO = Path(__file__).resolve().parents[2]
#: The chain_sum `quick` board (benchmarks/cpu-pilots/quick-v1), as the site names it.
QUICK = "cpu-pilots-quick-v1"
QUICK_RESULTS = REPO / "leaderboards" / "cpu-pilots" / "quick-v1" / "results"


def test_the_committed_quick_results_render_in_the_browser(tmp_path, browser, serve):
    """Real results the README's main command wrote (the chain_sum quick board, committed under
    leaderboards/cpu-pilots/quick-v1): built afresh, one plot marker per successful trained configuration,
    every run in the table, a run page with its curves and completions, no console errors, nothing
    fetched from elsewhere."""
    files = sorted(QUICK_RESULTS.glob("*.json"))
    assert files, f"no committed results in {QUICK_RESULTS} (`make bench` writes them)"
    runs = [results.read_result(f) for f in files]
    trained = [r for r in runs if r["status"] == "success" and r["config"]["trainer"] != "none"]
    assert trained, "the committed quick results have no successful trained run"
    root = tmp_path / "leaderboards"
    shutil.copytree(QUICK_RESULTS, root / QUICK / "results")
    out = tmp_path / "site"
    build_site(root, out)
    shots = Path(os.environ.get("PEFTHUB_SITE_SCREENSHOTS") or tmp_path) / "quick-screenshots"
    shots.mkdir(parents=True, exist_ok=True)

    origin = serve(out)
    page = browser.new_page()
    watch = Watch(page)
    page.goto(origin + "index.html")
    page.wait_for_load_state("load")
    configurations = {(r["config"]["method"], r["method"]["trainable_params"], r["config"]["trainer"]) for r in trained}
    assert page.locator("svg.params-plot .pt").count() == len(configurations)
    assert page.locator("svg.params-plot .base-ref .base-line").count() == 1
    assert page.locator("table.board tbody tr").count() == len(configurations) + 1  # + the base row
    page.screenshot(path=str(shots / "quick-index.png"), full_page=True)

    # It says it is a smoke run, every trained row has a verdict against base, and the compare view
    # pairs GRPO with SFT for each method with the numbers `pefthub compare` prints.
    power = page.locator(f"#suite-{QUICK}-power")
    assert power.is_visible() and "Smoke run" in power.inner_text() and "64 test items, 1 seed" in power.inner_text()
    verdicts = page.locator("table.board tbody tr:not(.ref) td.verdict .badge").all_inner_texts()
    assert len(verdicts) == len(configurations) and set(verdicts) <= {
        "better than base", "worse than base", "not significant after Holm (1 seed)", "not tested"}
    pairs = page.locator(f"#suite-{QUICK}-compare-table tbody tr.pair")
    assert pairs.count() == len({(m, p) for m, p, _ in configurations})
    from pefthub.report import stats
    from pefthub.report.table import read_table
    rows = {r.label: r for r in read_table(QUICK_RESULTS).rows}
    expected = stats.compare_rows(rows["full/grpo"], rows["full/sft"])
    full = pairs.filter(has_text="full/grpo")
    assert full.locator("td.delta").inner_text() == stats.fmt_pct(expected.delta, sign=True)
    page.locator(f"#suite-{QUICK}-compare-table").screenshot(path=str(shots / "quick-compare.png"))
    assert page.locator(f"#suite-{QUICK}-findings-table tbody tr").count() == 9
    assert page.locator(f"a[href='downloads/{QUICK}-findings.md']").count() == 1

    first = page.locator(f"table.board tbody a[href^='runs/{QUICK}/']").first
    first.click()
    page.wait_for_load_state("load")
    assert page.locator("svg.curve-plot").count() >= 2
    total = int(re.search(r"Show the (\d+) completions", page.locator("button.load-items").inner_text())[1])
    load_completions(page, total)
    assert total > 0
    page.screenshot(path=str(shots / "quick-run.png"), full_page=True)
    watch.check(origin)
    page.close()
