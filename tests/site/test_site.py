"""The leaderboard site: built from result files, escaped, robust to bad files, no torch.

The result documents below are TEST INPUTS written in the test (through pefthub.results so they
conform to the schema); their numbers come from a seeded generator, they are not benchmark
results, and nothing here is written under leaderboards/.
"""

from __future__ import annotations

import csv
import gzip
import html.parser
import json
import math
import random
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pefthub import results as R
from pefthub.cli import main as cli_main
from pefthub.errors import ConfigError
from pefthub.report import records
from pefthub.site import build_site, items
from pefthub.site.build import MARKER
from pefthub.site.aggregate import LR_SELECTED, LR_SINGLE, LR_UNSELECTED, pareto_front, view_suite
from pefthub.site.load import PAGE_ONLY_KEYS, load_leaderboards, read_samples, run_record, stream_suite
from pefthub.site.metrics import FORMATS, format_value, load_metrics
from pefthub.site.plots import count_tick
from pefthub.site.svg import LogAxis
from pefthub.site.pages import COLUMNS

ITEMS = items.FILE_NAME
XSS_COMPLETION = "Let me think. <script>alert(1)</script> <img src=x onerror=alert(1)> The answer is 42."
XSS_METHOD = '<b onmouseover="alert(1)">evil</b>'
XSS_TASK_OPTION = "</pre><script>alert('task')</script>"
ENVIRONMENT = {"pefthub": "0.1.0", "python": "3.11.7", "platform": "test", "packages": {"torch": "test"},
               "torch_threads": 2, "cpu": "test cpu", "cpu_count": 2, "gpu": None, "git_commit": None,
               "git_dirty": None, "hostname": "test"}
BUDGET = {"steps": 6, "batch_size": 4, "generations": 4, "max_new_tokens": 32, "max_seq_len": 256,
          "schedule": "constant", "warmup_ratio": 0.0}


def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _config(method, trainer, params, lr, seed, *, method_config=None, task=None, variant=None):
    config = {"model": "tiny-random", "task": task or {"name": "basic_arithmetic", "digits": 2},
            "trainer": trainer, "trainer_options": {}, "method": method,
            "method_config": method_config if method_config is not None else {"params": params},
            "params_target": params, "learning_rate": lr, "seed": seed, "budget": BUDGET,
            "eval": {"split": "test", "limit": 40, "max_new_tokens": 32, "backend": "hf"}}
    if variant:
        config["variant"] = variant
    return config


def _eval_block(correct: int, n: int, **extra) -> dict:
    low, high = wilson(correct, n)
    return {"accuracy": correct / n, "ci_low": low, "ci_high": high, "ci_method": "wilson", "n": n,
            "correct": correct, "metric": "exact_match", **extra}


def write_run(results_dir: Path, rng: random.Random, *, method, trainer, params, lr=1e-3, seed=0, test_correct,
              val_correct=None, n=40, status="success", error=None, completion=None, method_config=None, task=None,
              variant=None):
    config = _config(method, trainer, params, lr, seed, method_config=method_config, task=task, variant=variant)
    doc = R.new_result(config, suite="demo", status=status, error=error,
                       started_at=f"2026-11-22T10:{seed:02d}:00Z", finished_at=f"2026-11-22T11:{seed:02d}:00Z")
    steps = 0 if method == "base" else BUDGET["steps"]
    doc["model"] = {"name": "tiny-random", "total_params": 1_000_000}
    doc["method"] = {"name": method, "trainable_params": params,
                     "adapter_bytes": {"trainable_fp32": 4 * params, "saved_fp32": 4 * params + 1024}}
    spent = {"optimizer_steps": steps if status == "success" else 2, "seconds_eval": 5.0 + rng.random(),
             "peak_rss_bytes": int(2e9 + 1e9 * math.log10(params + 1) / 8 + rng.random() * 1e8)}
    if method != "base":
        spent.update(seconds_train=20.0 + 4 * math.log10(params + 1) + rng.random(),
                     seconds_generation=(30.0 + rng.random()) if trainer == "grpo" else 0.0)
    doc["budget"] = {"declared": BUDGET, "spent": spent}
    doc["curves"] = [{"step": s, "lr": lr, "loss": 1.0 / s + rng.random() * 0.1,
                      **({"reward": min(1.0, 0.2 + 0.05 * s), "reward_std": 0.3, "kl": None, "logprob_gap": 0.001 * s}
                         if trainer == "grpo" else {})} for s in range(1, steps + 1)]
    doc["environment"] = ENVIRONMENT
    samples = None
    if status == "success":
        doc["evaluation"] = {"test": _eval_block(test_correct, n)}
        if val_correct is not None:
            doc["evaluation"]["validation"] = _eval_block(val_correct, 20)
        samples = [{"split": "test", "id": f"basic_arithmetic-test-{i}", "prompt": f"What is {i} + {i}?",
                    "completion": completion if (completion and i == 0) else f"The answer is {2 * i}.",
                    "extracted": str(2 * i if i < test_correct else 2 * i + 1), "gold": str(2 * i),
                    "correct": i < test_correct} for i in range(n)]
    else:
        doc["curves"] = doc["curves"][:2]
    R.write_result(results_dir, doc, samples)
    return doc


def write_demo_leaderboards(root: Path) -> dict:
    """A small leaderboard with every case the site must handle; returns what to expect."""
    rng = random.Random(1234)
    results_dir = root / "demo" / "results"
    w = lambda **kw: write_run(results_dir, rng, **kw)  # noqa: E731
    w(method="base", trainer="none", params=0, lr=None, test_correct=12)
    for params, sft, grpo in ((13, 12, 16), (120, 13, 19)):
        w(method="tinylora", trainer="sft", params=params, lr=5e-3, test_correct=sft,
          method_config={"r": 2, "u": params, "weight_tying": 1.0})
    # Two learning rates with validation scores: 1e-3 wins on validation although 5e-3 wins on test.
    w(method="tinylora", trainer="grpo", params=13, lr=1e-3, test_correct=16, val_correct=11,
      method_config={"r": 2, "u": 13, "weight_tying": 1.0}, completion=XSS_COMPLETION)
    w(method="tinylora", trainer="grpo", params=13, lr=5e-3, test_correct=22, val_correct=9,
      method_config={"r": 2, "u": 13, "weight_tying": 1.0})
    w(method="tinylora", trainer="grpo", params=120, lr=5e-3, test_correct=19,
      method_config={"r": 2, "u": 120, "weight_tying": 1.0})
    # A suite's named variant of a method is its own row and series.
    w(method="tinylora", trainer="grpo", params=120, lr=5e-3, test_correct=17, variant="tinylora_structured",
      method_config={"r": 2, "u": 120, "weight_tying": 1.0, "tie": "structured"})
    # Two seeds of one configuration.
    for seed, correct in ((0, 21), (1, 24)):
        w(method="lora", trainer="grpo", params=27648, lr=1e-4, seed=seed, test_correct=correct,
          method_config={"r": 1})
    w(method="lora", trainer="sft", params=27648, lr=1e-4, test_correct=17, method_config={"r": 1})
    # Two learning rates without validation: nothing may be selected.
    for lr, correct in ((1e-5, 15), (1e-4, 18)):
        w(method="full", trainer="sft", params=1_000_000, lr=lr, test_correct=correct, method_config={})
    w(method="full", trainer="grpo", params=1_000_000, lr=1e-5, test_correct=23, method_config={})
    w(method=XSS_METHOD, trainer="grpo", params=64, lr=1e-3, test_correct=14,
      method_config={"note": XSS_TASK_OPTION}, task={"name": "basic_arithmetic", "note": XSS_TASK_OPTION})
    w(method="vera", trainer="grpo", params=4096, lr=1e-3, test_correct=0, status="failed",
      error="NaN loss at step 2 <script>alert('err')</script>")
    w(method="vera", trainer="sft", params=4096, lr=1e-3, test_correct=0, status="cancelled",
      error="cancelled by user (SIGINT)")

    # Files the build must report and skip, and one older-version file it must upgrade.
    (results_dir / "broken.json").write_text('{"schema_version": 1, "run_id": ', encoding="utf-8")
    (results_dir / "foreign.json").write_text(json.dumps({"name": "not-a-result", "version": "1.0"}), encoding="utf-8")
    good = json.loads((results_dir / f"{R.run_id(_config('lora', 'sft', 27648, 1e-4, 0, method_config={'r': 1}))}.json").read_text())
    del good["config"]["method"]
    good["config_hash"] = R.config_hash(good["config"])
    good["run_id"] = good["config_hash"][:16]
    (results_dir / "missing-key.json").write_text(json.dumps(good), encoding="utf-8")
    future = dict(good, schema_version=99)
    (results_dir / "future.json").write_text(json.dumps(future), encoding="utf-8")
    v0_config = _config("bitfit", "sft", 0, 1e-3, 0, method_config={})
    v0_config["method_config"] = {"bias": "all"}
    v0 = {"config": v0_config, "ok": True, "trainable_params": 2048, "started_at": "2026-01-01T00:00:00Z",
          "finished_at": "2026-01-01T00:10:00Z", "method": {"name": "bitfit"},
          "results": {"test": _eval_block(13, 40)}}
    (results_dir / "draft-v0.json").write_text(json.dumps(v0), encoding="utf-8")
    # A temp file a killed writer left behind is not a result at all.
    (results_dir / ".abc.json.123.tmp").write_text("{", encoding="utf-8")
    return {
        "suite": "demo",
        "bad_files": {"broken.json": "invalid JSON", "foreign.json": "not a pefthub result",
                      "missing-key.json": "config.method", "future.json": "newer"},
        # tinylora sft ×2, tinylora grpo ×2 (13 selected, 120), lora grpo, lora sft, full sft ×2 (unselected),
        # full grpo, the markup method, bitfit (v0), the structured variant: 12 points; base is a line.
        "plot_points": 12,
        "table_rows": 13,  # the 12 points + the base reference row
        "failures": 2,
    }


def item_lines(path: Path) -> list[dict]:
    """Every JSON line of a suite's items file (all its gzip members, read as one stream)."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def run_page_ranges(page: Path) -> items.Where:
    """The byte ranges a run page fetches from its suite's items file."""
    attrs = next(a for t, a in parse(page).elements if t == "section" and "items" in a.get("class", "").split())
    run = tuple(int(x) for x in attrs["data-run"].split())
    table = tuple(int(x) for x in attrs["data-table"].split()) if attrs["data-table"] else None
    return items.Where(run, table)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb") / "leaderboards"
    expected = write_demo_leaderboards(root)
    out = root.parent / "site"
    result = build_site(root, out)
    return root, out, result, expected


class Parsed(html.parser.HTMLParser):
    """Every element with its attributes, and the text inside <script> elements."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)


def parse(path: Path) -> Parsed:
    parser = Parsed()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


# ---- build and CLI -----------------------------------------------------------------------------
def test_cli_build_prints_index_path_and_reports_bad_files(tmp_path, capsys):
    root = tmp_path / "leaderboards"
    expected = write_demo_leaderboards(root)
    out = tmp_path / "public"
    assert cli_main(["site", "build", str(root), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    index = out / "index.html"
    assert captured.out.strip().splitlines()[-1] == str(index.resolve())
    page = index.read_text(encoding="utf-8")
    for name, reason in expected["bad_files"].items():
        line = next(l for l in captured.err.splitlines() if name in l)
        assert line.startswith("warning: skipped") and reason in line, line
        assert name in page
    assert ".tmp" not in captured.err
    # The v0 draft was upgraded, not skipped: its run is on the board.
    assert "draft-v0.json" not in captured.err
    assert ">bitfit</a>" in page


def test_site_layout_pages_downloads_and_assets(built):
    root, out, result, expected = built
    runs = sum(1 for p in (root / "demo" / "results").glob("*.json") if len(p.stem) == 16)
    assert result.suites == {"demo": runs + 1}  # + the upgraded v0 draft
    assert result.pages == runs + 1
    assert len(list((out / "runs" / "demo").glob("*.html"))) == runs + 1
    assert (out / "assets" / "site.css").is_file() and (out / "assets" / "site.js").is_file()
    assert (out / ".pefthub-site").is_file()
    assert result.plot_points == {"demo": expected["plot_points"]}
    # No reference to anything outside the built directory (offline, opened from disk).
    for page in out.rglob("*.html"):
        for tag, attrs in parse(page).elements:
            for key in ("src", "href"):
                url = attrs.get(key)
                if url and key in attrs and not url.startswith("#"):
                    assert not url.startswith(("http:", "https:", "//", "javascript:")), (page, url)
                    if not url.startswith("data:"):
                        target = (page.parent / url.split("#")[0]).resolve()
                        assert target.is_file() and out.resolve() in target.parents, (page.name, url)


def test_items_file_holds_every_run_and_pages_find_theirs(built):
    """No samples file and no result document is copied: each run page's byte ranges of the suite's one
    items file give back its whole document and its records exactly as stored; items tables are
    written once for every run scored on the same items."""
    root, out, _, _ = built
    assert not list(out.rglob("*.samples.jsonl")) and not list((out / "data").rglob("*.json"))
    path = out / "data" / "demo" / ITEMS
    assert [p.name for p in (out / "data" / "demo").iterdir()] == [ITEMS]
    results_dir = root / "demo" / "results"
    tables = set()
    for page in (out / "runs" / "demo").glob("*.html"):
        run_id = page.stem
        where = run_page_ranges(page)
        doc, records = items.read_run(path, where)
        source = results_dir / f"{run_id}.json"
        if source.exists():
            assert doc == R.read_result(source)
        stored = results_dir / f"{run_id}.samples.jsonl"
        assert records == (R.read_samples(stored, lm_eval_ids=False) if stored.exists() else [])
        if where.table:
            tables.add(where.table)
    lines = item_lines(path)
    assert len({l["table"] for l in lines if "items" in l}) == len(tables)
    # Every scored run of the demo has the same 40 items (prompts and answers): one table, written once.
    assert len(tables) == 1
    assert sum(1 for l in lines if "result" in l) == len(list((out / "runs" / "demo").glob("*.html")))


LEADERBOARDS = Path(__file__).resolve().parents[2] / "leaderboards"


def test_records_from_the_one_read_equal_the_report_layers(built):
    """The site reads each samples file once and makes the report layer's records from it
    (load.run_record): they equal :func:`pefthub.report.records.read_records`' own, so the site's rows
    are the rows `pefthub bench` prints."""
    root, *_ = built
    results_dir = root / "demo" / "results"
    theirs = {r.run_id: r for r in records.read_records(results_dir)}
    problems, shared = [], {}
    mine = {}
    for run, _ in stream_suite("demo", results_dir, root, problems):
        samples, problem = read_samples(run, root)
        mine[run.run_id] = run_record(run, samples, problem, shared)
    assert mine.keys() == theirs.keys() and len(mine) > 10
    for rid, a in mine.items():
        b = theirs[rid]
        assert (a.doc, a.path, a.samples_file, a.problem) == (b.doc, b.path, b.samples_file, b.problem)
        assert a.items.keys() == b.items.keys()
        for split, x in a.items.items():
            y = b.items[split]
            fields = ("ids", "extracted", "gold", "n", "no_answer", "at_cap")
            assert [getattr(x, f) for f in fields] == [getattr(y, f) for f in fields]
            assert (x.correct == y.correct).all() and (x.completions == y.completions).all()


def test_the_committed_leaderboards_build_without_copying_samples(tmp_path):
    """The site `make bench` publishes (leaderboards/site, not tracked), built from every committed
    suite: a page per result file, a member per run in each suite's items file, no file skipped,
    and far smaller than the results it reads (samples are never copied)."""
    out = tmp_path / "site"
    result = build_site(LEADERBOARDS, out)
    assert result.problems == []
    suites = {p.parent.name: p for p in LEADERBOARDS.glob("*/results")}
    assert set(result.suites) == set(suites) and suites
    results_bytes = 0
    for name, results_dir in suites.items():
        files = [p for p in R.result_files(results_dir)]
        results_bytes += sum(p.stat().st_size for p in results_dir.iterdir() if p.is_file())
        assert result.suites[name] == len(files) == len(list((out / "runs" / name).glob("*.html")))
        assert sum(1 for line in item_lines(out / "data" / name / ITEMS) if "result" in line) == len(files)
    site_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert site_bytes < results_bytes / 3


def test_load_keeps_what_rows_read_and_pages_read_the_rest_again(built):
    root, *_ = built
    (suite,), _ = load_leaderboards(root)
    run = suite.runs[0]
    kept = set(ENVIRONMENT) & set(records.ENVIRONMENT_KEYS)
    assert PAGE_ONLY_KEYS == ("environment",) and set(run.doc["environment"]) == kept != set(ENVIRONMENT)
    assert run.full_doc()["environment"] == ENVIRONMENT and run.full_doc()["run_id"] == run.run_id


def test_index_table_has_base_reference_row_and_failures_apart(built):
    _, out, _, expected = built
    parsed = parse(out / "index.html")
    rows = [a for t, a in parsed.elements if t == "tr" and "data-trainer" in a]
    assert len(rows) == expected["table_rows"]
    refs = [a for a in rows if "ref" in a.get("class", "").split()]
    assert len(refs) == 1 and refs[0]["data-method"] == "base"
    assert all(a["data-method"] != "vera" for a in rows)  # failed runs never ranked
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Failed and cancelled runs" in page and "NaN loss at step 2" in page and "cancelled by user" in page


def test_a_named_variant_is_its_own_row_and_series(built):
    root, out, *_ = built
    (suite,), _ = load_leaderboards(root)
    rows = [r for r in view_suite(suite).rows if r.method == "tinylora" and r.trainable_params == 120 and r.trainer == "grpo"]
    assert sorted(r.name for r in rows) == ["tinylora", "tinylora_structured"]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'data-method="tinylora_structured"' in page and "tinylora: r 2, u 120" in page
    points = [a for t, a in parse(out / "index.html").elements if "pt" in a.get("class", "").split()
              and a.get("data-method") == "tinylora_structured"]
    assert len(points) == 3  # the headline plot and both Pareto charts


def test_lr_selected_on_validation_never_on_test(built):
    root, *_ = built
    (suite,), _ = load_leaderboards(root)
    view = view_suite(suite)
    tiny13 = [r for r in view.rows if r.method == "tinylora" and r.trainer == "grpo" and r.trainable_params == 13]
    assert len(tiny13) == 1
    assert tiny13[0].lr_selection == LR_SELECTED and tiny13[0].learning_rate == 1e-3  # best validation, worse test
    assert tiny13[0].lr_candidates == [1e-3, 5e-3]
    full_sft = [r for r in view.rows if r.method == "full" and r.trainer == "sft"]
    assert sorted(r.learning_rate for r in full_sft) == [1e-5, 1e-4]
    assert {r.lr_selection for r in full_sft} == {LR_UNSELECTED}
    assert {r.lr_selection for r in view.rows if r.method == "lora"} == {LR_SINGLE}


def test_seeds_average_to_mean_and_t_interval(built):
    root, *_ = built
    (suite,), _ = load_leaderboards(root)
    view = view_suite(suite)
    (lora,) = [r for r in view.rows if r.method == "lora" and r.trainer == "grpo"]
    assert lora.seeds == 2 and lora.accuracy == pytest.approx((21 + 24) / 80)
    accs = [21 / 40, 24 / 40]
    half = 12.706204736 * (abs(accs[0] - accs[1]) / math.sqrt(2)) / math.sqrt(2)
    assert lora.ci_low == pytest.approx(max(0, lora.accuracy - half), abs=1e-6)
    assert lora.ci_high == pytest.approx(min(1, lora.accuracy + half), abs=1e-6)
    assert "2 seeds" in lora.ci_method
    assert view.base is not None and view.base.accuracy == pytest.approx(12 / 40)
    assert lora.delta_vs_base == pytest.approx(lora.accuracy - 12 / 40)


def test_identical_seeds_keep_at_least_the_evaluation_interval(tmp_path):
    rng = random.Random(0)
    results_dir = tmp_path / "lb" / "s" / "results"
    for seed in (0, 1, 2):
        write_run(results_dir, rng, method="lora", trainer="sft", params=100, seed=seed, test_correct=20)
    (suite,), _ = load_leaderboards(tmp_path / "lb")
    (row,) = view_suite(suite).rows
    low, high = wilson(20, 40)
    assert (row.ci_low, row.ci_high) == pytest.approx((low, high))
    assert "widened" in row.ci_method


def test_pareto_front_keeps_only_undominated_rows(built):
    root, *_ = built
    (suite,), _ = load_leaderboards(root)
    view = view_suite(suite)
    front = pareto_front(view.ranked, lambda r: r.peak_memory_bytes)
    assert front, "some row must be on the front"
    for row in view.ranked:
        if row.accuracy is None or row.peak_memory_bytes is None:
            continue
        dominated = any(o.peak_memory_bytes <= row.peak_memory_bytes and o.accuracy >= row.accuracy
                        and (o.peak_memory_bytes, o.accuracy) != (row.peak_memory_bytes, row.accuracy)
                        for o in view.ranked if o.accuracy is not None and o.peak_memory_bytes is not None)
        assert (row in front) != dominated, row.method
    costs = [r.peak_memory_bytes for r in front]
    assert costs == sorted(costs) and [r.accuracy for r in front] == sorted(r.accuracy for r in front)


def test_downloads_hold_the_table_as_raw_numbers(built):
    _, out, _, expected = built
    with open(out / "downloads" / "demo.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == expected["table_rows"]
    base = [r for r in rows if r["reference"] == "True"]
    assert len(base) == 1 and float(base[0]["accuracy"]) == pytest.approx(0.3)
    lora = [r for r in rows if r["method"] == "lora" and r["trainer"] == "grpo"][0]
    assert int(lora["seeds"]) == 2 and len(lora["run_ids"].split()) == 2
    # tinylora@13/grpo chose 1e-3, the smaller of its two rates, on validation: at the grid's low edge.
    tiny13 = [r for r in rows if r["method"] == "tinylora" and r["trainer"] == "grpo" and r["trainable_params"] == "13"]
    assert [r["lr_at_edge"] for r in tiny13] == ["low"] and lora["lr_at_edge"] == ""
    data = json.loads((out / "downloads" / "demo.json").read_text(encoding="utf-8"))
    assert len(data["rows"]) == expected["table_rows"] and len(data["failed"]) == expected["failures"]
    assert {f["status"] for f in data["failed"]} == {"failed", "cancelled"}
    assert any(r["method"] == XSS_METHOD for r in data["rows"])  # data kept verbatim in JSON
    edges = {(r["method"], r["trainer"], r["trainable_params"]): r["lr_at_edge"] for r in data["rows"]}
    assert edges[("tinylora", "grpo", 13)] == "low" and edges[("lora", "grpo", lora["trainable_params"] and int(lora["trainable_params"]))] is None


def test_csv_quotes_text_that_spreadsheets_would_run_as_a_formula(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "lb"
    write_run(root / "s" / "results", rng, method="=HYPERLINK(\"http://x\")", trainer="sft", params=10, test_correct=5)
    build_site(root, tmp_path / "out")
    text = (tmp_path / "out" / "downloads" / "s.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text


ODD_VALUES = [
    ("config", "learning_rate", "fast"), ("config", "seed", {"a": [1, 2]}), ("config", "task", "just a string"),
    ("config", "budget", ["not", "a", "dict"]), ("config", "method_config", 7), ("config", "eval", None),
    ("doc", "curves", [1, "x", None, {"step": "one", "loss": "high", "reward": True}, {"loss": float("inf")}]),
    ("doc", "budget", {"declared": "?", "spent": {"seconds_train": "long", "peak_rss_bytes": [1]}}),
    ("doc", "model", "tiny"), ("doc", "environment", ["x"]), ("doc", "finished_at", None),
    ("doc", "started_at", "yesterday"), ("method", "adapter_bytes", "big"), ("method", "trainable_params", -5),
    ("eval", "ci_low", None), ("eval", "n", 0), ("eval", "metrics", "none"), ("eval", "protocol", [1]),
    ("eval", "samples_file", 12),
]


def test_odd_but_valid_documents_still_build(tmp_path):
    """Fields the schema does not pin down can hold anything; the build must shrug, not crash."""
    results_dir = tmp_path / "lb" / "odd" / "results"
    for i, (where, key, value) in enumerate(ODD_VALUES):
        config = _config("lora", "sft", 100 + i, 1e-3, i)
        if where == "config":
            config[key] = value
        doc = R.new_result(config, suite="odd", status="success", started_at="2026-11-22T10:00:00Z",
                           finished_at="2026-11-22T11:00:00Z")
        doc["method"] = {"name": "lora", "trainable_params": 100 + i, "adapter_bytes": {"trainable_fp32": 400}}
        doc["evaluation"] = {"test": _eval_block(10, 40)}
        if where == "doc":
            doc[key] = value
        elif where == "method":
            doc["method"][key] = value
        elif where == "eval":
            doc["evaluation"]["test"][key] = value
        R.write_result(results_dir, doc)
    result = build_site(tmp_path / "lb", tmp_path / "out")
    assert result.problems == [] and result.pages == len(ODD_VALUES)
    assert result.plot_points["odd"] == len(ODD_VALUES) - 1  # all but the negative parameter count


# ---- safety ------------------------------------------------------------------------------------
def test_untrusted_strings_never_become_markup(built):
    _, out, _, _ = built
    pages = list(out.rglob("*.html"))
    assert len(pages) > 5
    for page in pages:
        parsed = parse(page)
        scripts = [a for t, a in parsed.elements if t == "script"]
        # Exactly our one external script, nothing inline.
        assert len(scripts) == 1 and scripts[0]["src"].endswith("assets/site.js"), page
        assert "".join(parsed.script_text).strip() == "", page
        for tag, attrs in parsed.elements:
            assert tag not in ("iframe", "object", "embed", "img", "base", "form"), (page, tag)
            handlers = [k for k in attrs if k.lower().startswith("on")]
            assert not handlers, (page, tag, handlers)
            for key in ("href", "src", "xlink:href"):
                assert not (attrs.get(key) or "").strip().lower().startswith("javascript:"), (page, tag)
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "<img" not in text and "<b onmouseover" not in text
    # The hostile completion is kept verbatim, as data, in the items file (site.js shows records as text only).
    records = [r for line in item_lines(out / "data" / "demo" / ITEMS) for r in line.get("records", [])]
    (member,) = [r for r in records if r.get("completion") == XSS_COMPLETION]
    assert member["correct"] is True
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "&lt;b onmouseover=&#34;alert(1)&#34;&gt;evil&lt;/b&gt;" in index  # table cell and plot tooltip


def test_samples_file_name_in_a_result_cannot_escape_its_directory(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "lb"
    results_dir = root / "s" / "results"
    (tmp_path / "secret.samples.jsonl").write_text(json.dumps({"split": "test", "completion": "TOP SECRET"}) + "\n")
    doc = write_run(results_dir, rng, method="lora", trainer="sft", params=10, test_correct=5)
    path = results_dir / f"{doc['run_id']}.json"
    (results_dir / f"{doc['run_id']}.samples.jsonl").unlink()
    data = json.loads(path.read_text())
    data["evaluation"]["test"]["samples_file"] = "../../../secret.samples.jsonl"
    path.write_text(json.dumps(data))
    build_site(root, tmp_path / "out")
    for page in (tmp_path / "out").rglob("*"):
        if page.is_file():
            data = gzip.decompress(page.read_bytes()) if page.suffix == ".gz" else page.read_bytes()
            text = data.decode("utf-8", errors="replace")
            assert "TOP SECRET" not in text, page


def test_corrupt_samples_file_is_reported_and_the_run_kept(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "lb"
    doc = write_run(root / "s" / "results", rng, method="lora", trainer="sft", params=10, test_correct=5)
    (root / "s" / "results" / f"{doc['run_id']}.samples.jsonl").write_text('{"split": "test"}\n{oops\n')
    result = build_site(root, tmp_path / "out")
    assert [p.file.endswith(".samples.jsonl") for p in result.problems] == [True]
    assert "line 2" in result.problems[0].reason
    assert result.pages == 1 and result.plot_points == {"s": 1}


# ---- output directory, errors, imports ---------------------------------------------------------
def test_rebuild_replaces_a_site_but_never_another_directory(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "lb"
    write_run(root / "s" / "results", rng, method="lora", trainer="sft", params=10, test_correct=5)
    out = tmp_path / "out"
    build_site(root, out)
    (out / "stale.html").write_text("old")
    build_site(root, out)
    assert not (out / "stale.html").exists() and (out / "index.html").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging dirs left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not built by pefthub"):
        build_site(root, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="would contain the results"):
        build_site(root, root)
    with pytest.raises(ConfigError, match="inside the results directory"):
        build_site(root, root / "s" / "results" / "site")
    (root / "s" / MARKER).write_text("")  # even a marker cannot make a suite directory replaceable
    with pytest.raises(ConfigError, match="contains the results directory"):
        build_site(root, root / "s")
    assert len(list((root / "s" / "results").glob("*.json"))) == 1


def test_build_is_deterministic(tmp_path):
    """Same results, same bytes: the committed site only changes when results do."""
    root = tmp_path / "lb"
    write_demo_leaderboards(root)
    build_site(root, tmp_path / "a")
    build_site(root, tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 20
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_missing_root_is_one_clear_error(tmp_path, capsys):
    assert cli_main(["site", "build", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: results directory") and "does not exist" in err and "\n" not in err


def test_empty_root_builds_a_site_that_says_so(tmp_path):
    (tmp_path / "lb").mkdir()
    result = build_site(tmp_path / "lb", tmp_path / "out")
    assert result.suites == {} and "No results yet" in result.index.read_text(encoding="utf-8")


def test_building_never_imports_torch(tmp_path):
    """The site command's whole path (its parser and run) in a fresh interpreter: no torch, no
    transformers. (Through pefthub.cli the result also depends on every other command module's
    imports, which this test does not own.)"""
    root = tmp_path / "lb"
    write_demo_leaderboards(root)
    code = ("import argparse, sys; from pefthub.commands import site_command as site; "
            "parser = argparse.ArgumentParser(); site.add_arguments(parser); "
            f"code = site.run(parser.parse_args(['build', {str(root)!r}, '-o', {str(tmp_path / 'out')!r}])); "
            "print(code, sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []"
    assert (tmp_path / "out" / "index.html").is_file()


def test_serve_answers_on_loopback(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "lb"
    write_run(root / "s" / "results", rng, method="lora", trainer="sft", params=10, test_correct=5)
    build_site(root, tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "-m", "pefthub", "site", "serve", str(tmp_path / "out"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "index.html", timeout=10) as response:
            assert response.status == 200 and b"Suite <em>s</em>" in response.read()
        # A byte range of the items file, as a run page asks for it, and one past its end.
        items_file = tmp_path / "out" / "data" / "s" / ITEMS
        request = urllib.request.Request(url + f"data/s/{ITEMS}", headers={"Range": "bytes=10-19"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 206 and response.read() == items_file.read_bytes()[10:20]
            assert response.headers["Content-Range"] == f"bytes 10-19/{items_file.stat().st_size}"
        late = urllib.request.Request(url + f"data/s/{ITEMS}", headers={"Range": "bytes=99999999-"})
        with pytest.raises(urllib.error.HTTPError, match="416"):
            urllib.request.urlopen(late, timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_without_a_built_site_is_one_clear_error(tmp_path, capsys):
    assert cli_main(["site", "serve", str(tmp_path)]) == 2
    assert "has no index.html" in capsys.readouterr().err


def test_log_axis_always_has_labelled_ticks():
    assert LogAxis.padded(300, 300, 0, 100).ticks() == [200.0, 500.0]
    assert LogAxis.padded(13, 134_515_008, 0, 100).ticks()[0] == 10.0
    assert count_tick(1e6) == "1M" and count_tick(1e3) == "1K" and count_tick(10) == "10"


# ---- metric schema -----------------------------------------------------------------------------
def test_metric_schema_covers_every_column_with_a_known_format():
    metrics = load_metrics()
    for key in COLUMNS:
        assert key in metrics
    for m in metrics.values():
        assert m.format in FORMATS and m.name and m.short and m.description
    assert metrics["accuracy"].higher_is_better is True and metrics["peak_memory_bytes"].higher_is_better is False


@pytest.mark.parametrize("kind,value,text", [
    ("percent", 0.3125, "31.2%"), ("pp", 0.05, "+5.0 pp"), ("pp", -0.021, "-2.1 pp"),
    ("count", 13, "13"), ("count", 27648, "27.6K"), ("count", 134_515_008, "135M"),
    ("bytes", 52, "52 B"), ("bytes", 2_400_000, "2.29 MiB"), ("duration", 4.25, "4.25 s"),
    ("duration", 812.4, "13 min 32 s"), ("sci", 1e-4, "1e-4"), ("sci", 5e-3, "5e-3"), ("percent", None, "—"),
])
def test_formats(kind, value, text):
    assert format_value(kind, value) == text
