"""Built-in offline tasks from reasoning-gym's procedural generators: ``chain_sum``,
``basic_arithmetic`` (easy arithmetic with difficulty ranges) and ``gsm_symbolic`` (GSM8K-derived
templates). Generator parameters are reasoning-gym's own; see ``pefthub tasks``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pefthub.hookspecs import hookimpl
from pefthub.tasks import arithmetic
from pefthub.tasks.answers import NUMERIC, format_number, parse_number
from pefthub.tasks.base import Example, param
from pefthub.tasks.procedural import ProceduralParams, ProceduralTask


@dataclass
class _RangeParams(ProceduralParams):
    min_terms: int = param(2, "fewest numbers in an expression")
    max_terms: int = param(6, "most numbers in an expression")
    min_digits: int = param(1, "fewest digits per number")
    max_digits: int = param(4, "most digits per number")

    def validate(self) -> None:
        super().validate()
        self.require(self.min_terms >= 1, "min_terms", "must be >= 1")
        self.require(self.max_terms >= self.min_terms, "max_terms", f"must be >= min_terms ({self.min_terms})")
        self.require(self.min_digits >= 1, "min_digits", "must be >= 1")
        self.require(self.max_digits >= self.min_digits, "max_digits", f"must be >= min_digits ({self.min_digits})")
        self.require(self.max_digits <= 18, "max_digits", "must be <= 18")


class _ExpressionTask(ProceduralTask):
    """An arithmetic expression task whose worked solution is the step-by-step reduction."""

    answer_format = NUMERIC

    def dedupe_key(self, example: Example) -> str:
        # "What is 5 + 3?" and "Compute 5 + 3." are one problem: keep it in one split only.
        return "".join(example.metadata["expression"].split())

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
                       metadata={"expression": expression, "source_index": index})


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
    operators: list[str] = param(list(OPERATORS), "operators to use, any of + - * /")
    allow_parentheses: bool = param(True, "allow parenthesised sub-expressions")
    allow_negation: bool = param(True, "allow negative numbers and negated parentheses")
    format_style: str = param("simple", "question wording: 'simple' (Calculate ...) or 'natural' (varied)")
    whitespace: str = param("single", "spacing between terms: 'single', 'no_space' or 'random'")

    def validate(self) -> None:
        super().validate()
        self.require(len(self.operators) > 0, "operators", "must name at least one operator")
        self.require(all(op in OPERATORS for op in self.operators), "operators",
                     f"may contain only {' '.join(OPERATORS)}")
        self.require(self.format_style in ("simple", "natural"), "format_style", "must be 'simple' or 'natural'")
        self.require(self.whitespace in ("single", "no_space", "random"), "whitespace",
                     "must be 'single', 'no_space' or 'random'")


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


@hookimpl
def register_tasks(register) -> None:
    register(ChainSum)
    register(BasicArithmetic)
    register(GsmSymbolic)
