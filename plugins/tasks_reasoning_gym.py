"""Built-in offline tasks from reasoning-gym's procedural generators: ``chain_sum``,
``basic_arithmetic`` (easy arithmetic with difficulty ranges), ``gsm_symbolic`` (GSM8K-derived
templates) and ``reasoning_gym`` (any short-answer reasoning-gym dataset, scored by its own
``score_answer``). Generator parameters are reasoning-gym's own; see ``pefthub tasks``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import difflib
import re

from pefthub.errors import ConfigError
from pefthub.hookspecs import hookimpl
from pefthub.tasks import arithmetic
from pefthub.tasks.answers import _NUMBER_RE, NUMERIC, AnswerFormat, completion_text, format_number, parse_number
from pefthub.tasks.base import Example, param
from pefthub.tasks.procedural import ProceduralParams, ProceduralTask


@dataclass
class _RangeParams(ProceduralParams):
    min_terms: int = param(2, "fewest numbers in an expression", min=1)
    max_terms: int = param(6, "most numbers in an expression", min=1)
    min_digits: int = param(1, "fewest digits per number", min=1)
    max_digits: int = param(4, "most digits per number", min=1, max=18)

    def validate(self) -> None:
        super().validate()
        self.require(self.max_terms >= self.min_terms, "max_terms", f"must be >= min_terms ({self.min_terms})")
        self.require(self.max_digits >= self.min_digits, "max_digits", f"must be >= min_digits ({self.min_digits})")


class _ExpressionTask(ProceduralTask):
    """An arithmetic expression task whose worked solution is the step-by-step reduction."""

    answer_format = NUMERIC

    def dedupe_key(self, example: Example) -> str:
        # "What is 5 + 3?" and "Compute 5 + 3." are one problem: keep it in one split only.
        return "".join(example.metadata["expression"].split())

    def stratum(self, example: Example) -> str | None:
        """The number of terms, e.g. "2 terms" (the generator's own count)."""
        terms = example.metadata.get("num_terms")
        return None if terms is None else f"{terms} terms"

    def make_example(self, item: dict[str, Any], index: int) -> Example | None:
        expression = item["metadata"]["expression"]
        value = arithmetic.value(expression)
        gold = parse_number(item["answer"])
        # Skip items whose generator result disagrees with exact arithmetic (floor division).
        if value is None or gold is None or value != gold:
            return None
        answer = format_number(gold)
        solution = arithmetic.worked_solution(expression, NUMERIC.answer_line(answer))
        return Example(id=str(index), question=item["question"], answer=answer, solution=solution,
                       metadata={"expression": expression, "source_index": index,
                                 "num_terms": item["metadata"].get("num_terms")})


@dataclass
class ChainSumParams(_RangeParams):
    allow_negation: bool = param(False, "allow negative numbers")


class ChainSum(_ExpressionTask):
    name = "chain_sum"
    description = "Sums and differences of integers (reasoning-gym chain_sum), e.g. '57 + 87 - 70 ='"
    dataset_name = "chain_sum"
    params_class = ChainSumParams


OPERATORS = ("+", "-", "*", "/")


@dataclass
class BasicArithmeticParams(_RangeParams):
    operators: list[str] = param(list(OPERATORS), "operators to use, any of + - * /", nonempty=True,
                                 choices=OPERATORS)
    allow_parentheses: bool = param(True, "allow parenthesised sub-expressions")
    allow_negation: bool = param(True, "allow negative numbers and negated parentheses")
    format_style: str = param("simple", "question wording: 'simple' (Calculate ...) or 'natural' (varied)",
                              choices=("simple", "natural"))
    whitespace: str = param("single", "spacing between terms: 'single', 'no_space' or 'random'",
                            choices=("single", "no_space", "random"))


class BasicArithmetic(_ExpressionTask):
    name = "basic_arithmetic"
    description = ("Integer expressions with + - * / and parentheses (reasoning-gym basic_arithmetic); "
                   "items whose exact value is not an integer are skipped")
    dataset_name = "basic_arithmetic"
    params_class = BasicArithmeticParams


@dataclass
class GsmSymbolicParams(ProceduralParams):
    difficulty: float = param(1.0, "template difficulty (reasoning-gym 0.1 supports only 1.0)")

    def validate(self) -> None:
        super().validate()
        self.require(self.difficulty == 1.0, "difficulty", "is not supported: reasoning-gym 0.1 generates only 1.0")


class GsmSymbolic(ProceduralTask):
    name = "gsm_symbolic"
    description = "Grade-school word problems from GSM8K-derived templates (reasoning-gym gsm_symbolic)"
    dataset_name = "gsm_symbolic"
    params_class = GsmSymbolicParams
    answer_format = NUMERIC

    def make_example(self, item: dict[str, Any], index: int) -> Example | None:
        gold = parse_number(item["answer"])
        cot = item["metadata"].get("answer_cot") or ""
        body, sep, final = cot.rpartition("####")
        # The template's own chain of thought is the SFT target only when it reaches the gold answer.
        if gold is None or not sep or not NUMERIC.equal(final.strip(), item["answer"]):
            return None
        answer = format_number(gold)
        solution = f"{body.strip()}\n{NUMERIC.answer_line(answer)}"
        return Example(id=str(index), question=item["question"], answer=answer, solution=solution,
                       metadata={"source_index": index})


# ---- any short-answer reasoning-gym dataset ------------------------------------------------------
#: Longest gold answer (characters, one line) the generic task keeps; longer items are skipped.
MAX_ANSWER_CHARS = 40
#: Items checked at construction: the dataset's scorer must accept each gold answer without metadata.
_SCORER_CHECK_ITEMS = 20
# "The answer is son.", "the final answer is: **12**", "The answer is `noremopyh`".
_SHORT_ANSWER_RE = re.compile(r"answer\s+is\s*:?\s*(.+)", re.IGNORECASE)


class ShortAnswer(AnswerFormat):
    """A one-line answer stated as "The answer is X." (strict), else the last number, else the
    last non-empty line (fallback); compared by the reasoning-gym dataset's own ``score_answer``
    (full credit only), given the gold answer alone."""

    name = "short"
    instruction = ("Solve the problem. Show your working briefly, then finish with a last line of the "
                   "form \"The answer is X.\" where X is the answer alone.")

    def __init__(self, dataset) -> None:
        self._dataset = dataset

    def answer_line(self, answer: str) -> str:
        return f"The answer is {answer}."

    def extract_strict(self, completion: Any) -> str | None:
        matches = _SHORT_ANSWER_RE.findall(completion_text(completion))
        return _clean(matches[-1]) if matches else None

    def fallback(self, text: str) -> str | None:
        numbers = _NUMBER_RE.findall(text)
        if numbers:
            return numbers[-1]
        lines = [line for line in (_clean(x) for x in text.splitlines()) if line]
        return lines[-1] if lines else None

    def equal(self, extracted: str | None, gold: str) -> bool:
        if extracted is None:
            return False
        try:
            return self._dataset.score_answer(extracted, _bare_entry(gold)) >= 1.0
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError):
            return False  # some scorers parse the answer and raise on malformed text: not correct


def _clean(text: str) -> str:
    """An answer without surrounding emphasis, quotes, dollars or a final full stop."""
    text = re.split(r"\.(?:\s|$)", text.strip(), maxsplit=1)[0]  # up to the sentence's full stop
    return text.strip().strip("*`$\"' ").strip()


def _bare_entry(gold: str) -> dict[str, Any]:
    # Evaluation carries only the gold answer (lm-eval docs, reward columns), so the scorer gets that alone.
    return {"question": "", "answer": gold, "metadata": {}}


@dataclass
class ReasoningGymParams(ProceduralParams):
    dataset: str = param("leg_counting", "reasoning-gym dataset name (one whose answers are short)")
    options: dict[str, Any] = param({}, "that dataset's generator config, e.g. {min_animals = 1, max_animals = 2}")

    def validate(self) -> None:
        super().validate()
        import reasoning_gym.factory

        known = sorted(reasoning_gym.factory.DATASETS)
        if self.dataset not in known:
            close = difflib.get_close_matches(self.dataset, known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see reasoning_gym.factory.DATASETS"
            self.require(False, "dataset", f"is not a reasoning-gym dataset ({hint})")
        self.require("seed" not in self.options and "size" not in self.options, "options",
                     "may not set seed or size (use the task's seed and split sizes)")

    def generator_kwargs(self) -> dict[str, Any]:
        return dict(self.options)


class ReasoningGym(ProceduralTask):
    """Any reasoning-gym dataset with one-line answers of at most MAX_ANSWER_CHARS characters; the SFT
    target is the answer line alone (reasoning-gym gives no worked solution for most datasets)."""

    name = "reasoning_gym"
    description = ("Any short-answer reasoning-gym dataset (parameter dataset, generator config in options), "
                   "scored by the dataset's own score_answer; the SFT target is the answer line alone")
    dataset_name = "reasoning_gym"
    params_class = ReasoningGymParams
    answer_format = NUMERIC  # replaced per instance by a ShortAnswer bound to the dataset
    # Not a registered reward (those see only the gold answer, not the dataset): GRPO's resolve_reward
    # falls back to task.score under this name, so reward and metric still share one scorer.
    reward = "reasoning_gym.score"
    format_reward = ""

    def __init__(self, params: ReasoningGymParams | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.answer_format = ShortAnswer(self._dataset)
        self._check_scorer()

    def _make_dataset(self, size: int):
        import reasoning_gym

        p = self.params
        try:
            return reasoning_gym.create_dataset(p.dataset, seed=p.seed, size=size, **p.options)
        except (AssertionError, TypeError, ValueError, KeyError) as exc:
            detail = str(exc) or type(exc).__name__
            raise ConfigError(f"task '{self.name}': invalid options for reasoning-gym '{p.dataset}' "
                              f"({', '.join(f'{k}={v!r}' for k, v in p.options.items()) or 'none'}): {detail}") from None

    def _check_scorer(self) -> None:
        """Fail with one line when the dataset's scorer needs the item's metadata (evaluation and
        rewards carry only the gold answer) or its answers are not short."""
        dataset = self._make_dataset(size=_SCORER_CHECK_ITEMS)
        where = f"task '{self.name}': reasoning-gym '{self.params.dataset}'"
        try:  # some generators check their config only when drawing an item
            items = [dataset[i] for i in range(len(dataset))]
        except (AssertionError, TypeError, ValueError, KeyError, IndexError) as exc:
            raise ConfigError(f"{where} cannot generate items with options "
                              f"{self.params.options!r}: {str(exc) or type(exc).__name__}") from None
        if not any(_short(item["answer"]) for item in items):
            raise ConfigError(f"{where} has no one-line answers of at most {MAX_ANSWER_CHARS} characters "
                              f"in its first {len(items)} items (e.g. {str(items[0]['answer'])[:60]!r})")
        for item in items:
            try:
                ok = dataset.score_answer(item["answer"], _bare_entry(item["answer"])) >= 1.0
            except (KeyError, TypeError, AttributeError, IndexError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"{where} scores answers with item metadata, which evaluation does not carry; "
                                  f"use another dataset")

    def make_example(self, item: dict[str, Any], index: int) -> Example | None:
        answer = item["answer"]
        if not _short(answer):
            return None
        return Example(id=str(index), question=item["question"], answer=answer,
                       solution=self.answer_format.answer_line(answer),
                       metadata={"source_index": index, "stratum": _item_stratum(item.get("metadata") or {})})

    def stratum(self, example: Example) -> str | None:
        """The item's ``task_type`` (e.g. aiw's "siblings"), else its own difficulty level
        ("difficulty 2"), else None (a difficulty that is the generator's config ranges is no stratum)."""
        return example.metadata.get("stratum")


def _item_stratum(metadata: dict[str, Any]) -> str | None:
    task_type = metadata.get("task_type")
    if isinstance(task_type, str) and task_type:
        return task_type
    difficulty = metadata.get("difficulty")
    if isinstance(difficulty, dict) and len(difficulty) == 1:  # e.g. {"difficulty": 2}: the item's own level
        difficulty = next(iter(difficulty.values()))
    if isinstance(difficulty, (int, float, str)) and not isinstance(difficulty, bool):
        return f"difficulty {difficulty}"
    return None


def _short(answer: Any) -> bool:
    return isinstance(answer, str) and 0 < len(answer) <= MAX_ANSWER_CHARS and "\n" not in answer


@hookimpl
def register_tasks(register) -> None:
    register(ChainSum)
    register(BasicArithmetic)
    register(GsmSymbolic)
    register(ReasoningGym)
