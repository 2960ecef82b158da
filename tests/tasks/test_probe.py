"""`pefthub probe`: task difficulty at the rollout temperature (pass rate, informative GRPO groups)."""

import json

import pytest

from pefthub import cli
from pefthub.difficulty import ProbeSettings, probe, summarize

ARITH = {"name": "chain_sum", "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2,
         "allow_negation": False, "test_size": 20, "validation_size": 5}


def test_summary_counts_groups_by_hand():
    per_prompt = [  # 4 generations each
        {"id": "a", "correct": 0, "capped": 4, "no_answer": 4, "tokens": 256},
        {"id": "b", "correct": 2, "capped": 0, "no_answer": 0, "tokens": 40},
        {"id": "c", "correct": 4, "capped": 0, "no_answer": 0, "tokens": 40},
        {"id": "d", "correct": 1, "capped": 1, "no_answer": 1, "tokens": 80},
    ]
    s = summarize(per_prompt, 4)
    assert s["pass_rate"] == pytest.approx((0 + 0.5 + 1 + 0.25) / 4)
    assert (s["informative_groups"], s["all_wrong_groups"], s["all_right_groups"]) == (2, 1, 1)
    assert s["informative_share"] == 0.5
    assert s["informative_share_ci"] == pytest.approx([0.150, 0.850], abs=1e-3)  # Wilson 2/4, by hand
    assert s["capped_share"] == pytest.approx(5 / 16)
    assert s["no_answer_share"] == pytest.approx(5 / 16)
    assert s["mean_completion_tokens"] == pytest.approx((64 + 10 + 10 + 20) / 4)
    low, high = s["pass_rate_ci"]
    assert low < s["pass_rate"] < high


def test_probe_on_a_tiny_model_counts_every_sample():
    doc = probe(ProbeSettings(model="tiny-random", task=ARITH, generations=3, prompts=6, max_new_tokens=6, chunk=4))
    s = doc["summary"]
    assert doc["schema"] == "pefthub.probe" and len(doc["per_prompt"]) == 6
    assert s["informative_groups"] + s["all_wrong_groups"] + s["all_right_groups"] == 6
    assert all(0 <= p["correct"] <= 3 and 0 <= p["capped"] <= 3 for p in doc["per_prompt"])
    assert doc["settings"]["task"]["max_digits"] == 2 and doc["settings"]["task"]["seed"] == 0
    assert doc["rollout_backend"] in ("fused", "hf")


@pytest.mark.parametrize("argv,message", [
    (["--generations", "1"], "generations: must be an integer >= 2"),
    (["--temperature", "0"], "temperature: must be a number > 0"),
    (["--prompts", "0"], "error: prompts: must be a positive integer (got 0)"),
    (["--task-param", "max_terms=2"], "--task-param needs --task"),
    (["--task", "chain_sum", "--task-param", "max_terms=0"], "max_terms"),
])
def test_bad_arguments_fail_in_one_line_before_any_model(argv, message, capsys, monkeypatch, tmp_path):
    import pefthub.models

    monkeypatch.setattr(pefthub.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert cli.main(["probe", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_probe_file_is_written_once_and_reused(tmp_path, capsys):
    source = tmp_path / "probes.toml"
    source.write_text('[[probe]]\nmodel = "tiny-random"\nprompts = 3\ngenerations = 2\nmax_new_tokens = 4\n'
                      'task = { name = "chain_sum", max_terms = 2, max_digits = 2, allow_negation = false, '
                      'test_size = 20, validation_size = 5 }\n')
    out = tmp_path / "probes"
    assert cli.main(["probe", "--from", str(source), "--out", str(out)]) == 0
    (path,) = out.glob("*.json")
    first = path.read_text()
    assert cli.main(["probe", "--from", str(source), "--out", str(out)]) == 0
    assert path.read_text() == first and "stored" in capsys.readouterr().out
    report = tmp_path / "probes.md"
    assert cli.main(["probe", "--from", str(source), "--out", str(out), "--report", str(report)]) == 0
    doc = json.loads(first)
    row = report.read_text().splitlines()[-1]
    assert f"{doc['summary']['informative_groups']}/3" in row and path.name in row and "T" not in row[:2]


def test_unknown_key_in_a_probe_file_names_it(tmp_path, capsys):
    source = tmp_path / "probes.toml"
    source.write_text("[[probe]]\ntemperatur = 1.0\n")
    assert cli.main(["probe", "--from", str(source), "--out", str(tmp_path)]) == 2
    assert "unknown key(s) temperatur" in capsys.readouterr().err


def test_default_task_train_split_is_mostly_three_term_questions():
    """The distribution shift docs/benchmarks.md ("Pilots") describes: the small two-term space is
    used up by the test and validation splits, so train prompts are nearly all three-term."""
    from pefthub.runner import default_task, make_task

    task = make_task(default_task())

    def two_term_share(split, n):
        examples = task.examples(split, n)
        return sum(task.user_prompt(e).count(" + ") + task.user_prompt(e).count(" - ") == 1
                   for e in examples) / len(examples)

    assert two_term_share("test", 500) > 0.25
    assert two_term_share("train", 1000) < 0.02
