"""Hub tasks (gsm8k, MATH-500) loaded through `datasets` from fixture files in the hub's schema."""

from __future__ import annotations

import json

import pytest

from pefthub.errors import ConfigError
from pefthub.tasks import get_task

pd = pytest.importorskip("pandas")


def gsm8k_row(i: int) -> dict:
    # openai/gsm8k "main": question, answer with <<calculator>> annotations and a final "#### N"
    return {"question": f"Natalia sold clips to {i} friends, then {i + 2} more. How many clips did she sell?",
            "answer": f"She sold {i} + {i + 2} = <<{i}+{i + 2}={2 * i + 2}>>{2 * i + 2} clips.\n#### {2 * i + 2:,}"}


@pytest.fixture
def gsm8k_files(tmp_path):
    """The hub's layout: main/train-00000-of-00001.parquet and main/test-00000-of-00001.parquet."""
    root = tmp_path / "gsm8k"
    (root / "main").mkdir(parents=True)
    train = [gsm8k_row(i) for i in range(40)] + [gsm8k_row(100)]  # row 100 duplicates a test question
    test = [gsm8k_row(i) for i in range(100, 112)]
    pd.DataFrame(train).to_parquet(root / "main" / "train-00000-of-00001.parquet", index=False)
    pd.DataFrame(test).to_parquet(root / "main" / "test-00000-of-00001.parquet", index=False)
    return root


MATH_ROWS = [
    {"problem": "Compute $\\frac{1}{2} + \\frac{1}{4}$.", "solution": "We get $\\boxed{\\frac{3}{4}}$.",
     "answer": "\\frac{3}{4}", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "Convert $(0,3)$ to polar coordinates.", "solution": "So $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.",
     "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
     "unique_id": "test/precalculus/807.json"},
    {"problem": "What is $\\sqrt{16}$?", "solution": "$\\sqrt{16} = \\boxed{4}$.", "answer": "4",
     "subject": "Algebra", "level": 5, "unique_id": "test/algebra/2.json"},
]


@pytest.fixture
def math500_file(tmp_path):
    """The hub's file: test.jsonl with problem, solution, answer, subject, level, unique_id."""
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MATH_ROWS))
    return path


def test_gsm8k_loads_hub_schema_parquet_with_worked_solutions(gsm8k_files):
    files = {s: str(gsm8k_files / "main" / f"{s}-00000-of-00001.parquet") for s in ("train", "test")}
    task = get_task("gsm8k", data_files=files, validation_size=10)
    test = task.examples("test")
    assert len(test) == 12 and test[0].answer == "202"
    assert test[0].solution == "She sold 100 + 102 = 202 clips.\nThe answer is 202."  # annotations stripped
    assert task.score(task.target(test[0]), test[0]) == 1.0
    val, train = task.examples("validation"), task.examples("train")
    assert len(val) == 10 and len(train) == 30  # 41 train rows minus the duplicated test question
    qs = [{e.question for e in split} for split in (test, val, train)]
    assert not qs[0] & qs[1] and not qs[0] & qs[2] and not qs[1] & qs[2]
    # validation is a seeded pick: same seed, same pick; other seed, other pick
    assert get_task("gsm8k", data_files=files, validation_size=10).examples("validation") == val
    assert get_task("gsm8k", data_files=files, validation_size=10, seed=3).examples("validation") != val


def test_gsm8k_thousands_separator_answers_are_canonical(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "1000 + 200 = 1200\n#### 1,200"}) + "\n")
    ex = get_task("gsm8k", data_files={"test": str(path)}).examples("test")[0]
    assert ex.answer == "1200"


def test_gsm8k_from_a_local_copy_of_the_repository(gsm8k_files):
    task = get_task("gsm8k", path=str(gsm8k_files), validation_size=5)
    assert len(task.examples("test")) == 12 and len(task.examples("train")) == 35


def test_unreachable_hub_names_the_dataset_and_the_local_options():
    with pytest.raises(ConfigError) as info:
        get_task("gsm8k").examples("test", 1)
    message = str(info.value)
    assert "dataset openai/gsm8k" in message and "split test" in message
    assert "data_files" in message and "path" in message and "\n" not in message


def test_missing_file_and_wrong_schema_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="data file for split 'test' not found"):
        get_task("gsm8k", data_files={"test": str(tmp_path / "nope.parquet")}).examples("test")
    bad = tmp_path / "test.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "label": "1"}) + "\n")
    with pytest.raises(ConfigError, match=r"lacks column\(s\) question, answer"):
        get_task("gsm8k", data_files={"test": str(bad)}).examples("test")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(gsm8k_row(1)) + "\n")
    with pytest.raises(ConfigError, match="data_files has no file for split 'train'"):
        get_task("gsm8k", data_files={"test": str(good)}).examples("train")


def test_math500_boxed_answers_are_checked_with_math_verify(math500_file):
    task = get_task("math500", data_files={"test": str(math500_file)})
    test = task.examples("test")
    assert [e.answer for e in test] == [r["answer"] for r in MATH_ROWS]
    polar = test[1]
    assert task.score("Thus the point is $\\boxed{(3, \\pi/2)}$.", polar) == 1.0
    assert task.score("Thus the point is $\\boxed{(3, \\pi)}$.", polar) == 0.0
    assert task.score("The sum is \\boxed{0.75}", test[0]) == 1.0
    assert all(task.score(task.target(e), e) == 1.0 for e in test)  # the hub's solutions are correct targets
    assert [e.answer for e in get_task("math500", data_files={"test": str(math500_file)},
                                       levels=[5]).examples("test")] == ["4"]


def test_math500_has_no_train_split(math500_file):
    task = get_task("math500", data_files={"test": str(math500_file)})
    with pytest.raises(ConfigError, match=r"task 'math500': the train split is empty: HuggingFaceH4/MATH-500 has "
                                          r"only a test split"):
        task.examples("train", 4)
