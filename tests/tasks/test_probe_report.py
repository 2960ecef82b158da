"""The probe report's verdict: the best informative-group share and how many probes reach 50%."""

from argparse import Namespace
from pathlib import Path

from pefthub.commands.probe_command import report
from pefthub.difficulty import summarize


def _doc(correct: list[int], name: str) -> tuple[Path, dict]:
    per_prompt = [{"id": str(i), "correct": c, "capped": 0, "no_answer": 0, "tokens": 40} for i, c in enumerate(correct)]
    return Path(f"{name}.json"), {
        "summary": summarize(per_prompt, 4), "rollout_backend": "fused", "seconds": 10.0, "load_average": [1.0, 2.0],
        "settings": {"temperature": 1.0, "generations": 4, "max_new_tokens": 64, "task": {"name": name, "seed": 0, "test_size": 5}}}


def test_verdict_names_the_best_probe_and_counts_those_at_half():
    low = _doc([0] * 9 + [1], "low")                  # 1/10 informative
    high = _doc([2] * 14 + [0] * 6, "high")           # 14/20 = 70%, Wilson lower bound under 50%
    sure = _doc([1] * 40 + [4] * 10, "sure")          # 40/50 = 80%, Wilson [67.0%, 88.8%]
    text = report([low, high, sure], Namespace(source=None, out=Path("x"))).splitlines()
    assert text[2].startswith("Highest informative-group share: name=sure (T=1, 50 × 4, 64 new tokens): 40/50 = 80.0% [67.0%, 88.8%]")
    assert text[4].startswith("Reaching 50.0% informative groups: 2 of 3 probes by point estimate, 1 with the whole")
    rows = [line for line in text if line.startswith("| name=")]
    assert [r.split("|")[1].strip() for r in rows] == ["name=sure", "name=high", "name=low"]


def test_stored_only_runs_nothing_and_says_what_is_missing(tmp_path, monkeypatch):
    import pytest

    import pefthub.models
    import pefthub.difficulty
    from pefthub import cli

    monkeypatch.setattr(pefthub.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(pefthub.difficulty, "probe", lambda *a, **k: pytest.fail("probe run"))
    source = tmp_path / "probes.toml"
    source.write_text('[[probe]]\nmodel = "tiny-random"\nprompts = 3\n'
                      'task = { name = "chain_sum", max_terms = 2, test_size = 20, validation_size = 5 }\n')
    report_path = tmp_path / "probes.md"
    assert cli.main(["probe", "--from", str(source), "--out", str(tmp_path / "p"), "--report", str(report_path),
                     "--stored-only"]) == 0
    text = report_path.read_text()
    assert "--stored-only" in text.splitlines()[0] and "1 probe(s) of the file were not run" in text
    assert not list((tmp_path / "p").glob("*.json"))


def test_verdict_counts_a_screen_only_through_its_larger_rerun():
    screen = _doc([2] * 8 + [0] * 2, "same")         # 8/10 on the first 10 prompts
    larger = _doc([2] * 8 + [0] * 32, "same")        # 8/40 on 40 prompts, the same settings otherwise
    other = _doc([2] * 3 + [0] * 7, "other")         # 3/10
    text = report([screen, larger, other], Namespace(source=None, out=Path("x"))).splitlines()
    assert "name=other" in text[2] and "3/10 = 30.0%" in text[2]
    assert "0 of 2 probes by point estimate" in text[4] and "1 probe(s) not counted here" in text[4]


def test_the_floor_line_names_the_best_probe_whose_pass_rate_beats_its_constant_answer():
    guessable = _doc([2] * 30 + [0] * 20, "guessable")   # 60% informative, pass 30%, floor 50% (two answers)
    skill = _doc([1] * 10 + [0] * 40, "skill")            # 20% informative, pass 5%, floor 2%
    floors = {"guessable.json": {"answer": "3", "share": 0.5, "distinct": 2, "prompts": 50},
              "skill.json": {"answer": "60", "share": 0.02, "distinct": 45, "prompts": 50}}
    text = report([guessable, skill], Namespace(source=None, out=Path("x")), floors=floors)
    lines = text.splitlines()
    assert "name=guessable" in lines[2]                   # the informative-share verdict is unchanged
    assert lines[6].startswith("Pass rate above the constant-answer floor") and ": 1 of 2 probes; " in lines[6]
    assert "name=skill (50 × 4, 64 new tokens): 10/50 = 20.0%" in lines[6] and "against a floor of 2.0%" in lines[6]
    assert '| "3" 50.0% (2 answers) |' in text and '| "60" 2.0% (45 answers) |' in text


def test_a_probe_floor_is_the_most_common_gold_answer_of_its_prompts():
    from pefthub.difficulty import answer_floor
    from pefthub.tasks import examples_by_id, task_from_config

    task = {"name": "reasoning_gym", "dataset": "aiw", "options": {"max_entities": 3}, "split_rule": "hash",
            "test_size": 40, "validation_size": 20}
    ids = [f"reasoning_gym-train-{i}" for i in range(60)]
    floor = answer_floor(task, ids)
    answers = [e.answer for e in examples_by_id(task_from_config(task), "train", ids).values()]
    assert floor["distinct"] == len(set(answers)) <= 3 and floor["prompts"] == 60
    assert floor["share"] == max(answers.count(a) for a in set(answers)) / 60 == answers.count(floor["answer"]) / 60
