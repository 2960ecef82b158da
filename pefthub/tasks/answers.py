"""Answer formats: the instruction a prompt gives, the extractors and the comparison.

This is the one place that decides what a completion answered and whether it is right. Tasks,
the registered reward functions (:mod:`pefthub.rewards`) and the lm-eval filters and metric
(:mod:`pefthub.evaluation.lm_eval_glue`) all call these objects, so a reward of 1.0 during training
and a correct sample in evaluation mean exactly the same thing.

Two extractors per format, mirroring lm-eval's gsm8k task:

* ``extract_strict``: the answer only when the completion states it in the requested format
  ("The answer is 42." / ``\\boxed{...}``), else None (lm-eval filter ``strict-match``).
* ``extract``: the strict answer, else a fallback (the last number / math-verify's best match),
  else None (lm-eval filter ``flexible-extract``; the headline metric and the default reward).
"""

from __future__ import annotations

import functools
import re
import threading
from decimal import Decimal, InvalidOperation
from typing import Any

# A number as people write it: optional sign, thousands separators or plain digits, decimals.
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
# "The answer is 42", "the final answer is: $1,200", "The answer is **-3**".
_ANSWER_LINE_RE = re.compile(r"answer\s+is\s*:?\s*[*$\\(\s]*(" + _NUMBER + ")", re.IGNORECASE)
# Relative tolerance for numeric answers: floats printed by Python (0.30000000000000004) still match.
NUMERIC_REL_TOL = 1e-6


def completion_text(completion: Any) -> str:
    """The text of a completion given as a plain string or as TRL's conversational form
    (a list of ``{"role": ..., "content": ...}`` messages; the last assistant message counts)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        chosen = assistant[-1] if assistant else (messages[-1] if messages else None)
        if chosen is None:
            return "".join(part for part in completion if isinstance(part, str))
        content = chosen.get("content")
        if isinstance(content, list):  # multimodal-style content parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""
    return str(completion)


class AnswerFormat:
    """Base class: ``instruction`` (system prompt), ``answer_line``, extractors and ``equal``."""

    name: str = ""
    instruction: str = ""

    def answer_line(self, answer: str) -> str:
        """The final line a correct, well-formatted completion ends with (used in SFT targets)."""
        raise NotImplementedError

    def extract_strict(self, completion: Any) -> str | None:
        raise NotImplementedError

    def fallback(self, text: str) -> str | None:
        raise NotImplementedError

    def extract(self, completion: Any) -> str | None:
        text = completion_text(completion)
        strict = self.extract_strict(text)
        return strict if strict is not None else self.fallback(text)

    def equal(self, extracted: str | None, gold: str) -> bool:
        raise NotImplementedError

    def score(self, completion: Any, gold: str) -> float:
        return 1.0 if self.equal(self.extract(completion), gold) else 0.0

    def format_score(self, completion: Any) -> float:
        """1.0 when the completion states an answer in the requested format (any answer)."""
        return 0.0 if self.extract_strict(completion) is None else 1.0


def parse_number(text: str | None) -> Decimal | None:
    """The number written in ``text`` ("1,200", "$3.50", "-4.", "12%"), or None."""
    if text is None:
        return None
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".%").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def format_number(value: Decimal) -> str:
    """Canonical text of a number: integers without a decimal point, others without trailing zeros."""
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


class NumericAnswer(AnswerFormat):
    """A single number, stated as "The answer is N." (strict) or as the last number (fallback)."""

    name = "numeric"
    instruction = ("Solve the problem. Show your working briefly, then finish with a last line of the "
                   "form \"The answer is N.\" where N is a number.")

    def answer_line(self, answer: str) -> str:
        return f"The answer is {answer}."

    def extract_strict(self, completion: Any) -> str | None:
        matches = _ANSWER_LINE_RE.findall(completion_text(completion))
        return _canonical(matches[-1]) if matches else None

    def fallback(self, text: str) -> str | None:
        matches = _NUMBER_RE.findall(text)
        return _canonical(matches[-1]) if matches else None

    def equal(self, extracted: str | None, gold: str) -> bool:
        got, want = parse_number(extracted), parse_number(gold)
        if got is None or want is None:
            return extracted is not None and extracted.strip() == str(gold).strip()
        tolerance = Decimal(str(NUMERIC_REL_TOL)) * max(Decimal(1), abs(want))
        return abs(got - want) <= tolerance


def _canonical(number_text: str) -> str:
    value = parse_number(number_text)
    return format_number(value) if value is not None else number_text


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces.

    Hand-written because the record needs the answer as the model wrote it; math-verify returns a
    normalised form, and a regex cannot match nested braces.
    """
    best = None
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    best = text[start:i].strip()
                    break
    return best


def _math_verify_timeout() -> int | None:
    # math-verify times out with SIGALRM, which only works in the main thread.
    return 5 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def _parse_latex(text: str) -> tuple:
    from math_verify import parse

    return tuple(parse(text, parsing_timeout=_math_verify_timeout()))


class BoxedLatexAnswer(AnswerFormat):
    """A LaTeX answer in ``\\boxed{}`` (strict) or math-verify's best match (fallback); two answers
    are equal when math-verify says they are mathematically equivalent."""

    name = "boxed-latex"
    instruction = "Solve the problem step by step. Put the final answer in \\boxed{}."

    def answer_line(self, answer: str) -> str:
        return f"The answer is $\\boxed{{{answer}}}$."

    def extract_strict(self, completion: Any) -> str | None:
        return last_boxed(completion_text(completion))

    def fallback(self, text: str) -> str | None:
        parsed = _parse_latex(text)
        return parsed[1].strip() if len(parsed) >= 2 and isinstance(parsed[1], str) and parsed[1].strip() else None

    def equal(self, extracted: str | None, gold: str) -> bool:
        if extracted is None:
            return False
        from math_verify import verify

        want = _parse_latex(f"\\boxed{{{gold}}}")
        got = _parse_latex(f"\\boxed{{{extracted}}}")
        if not want or not got:
            return extracted.strip() == str(gold).strip()
        return bool(verify(list(want), list(got), timeout_seconds=_math_verify_timeout()))


NUMERIC = NumericAnswer()
BOXED_LATEX = BoxedLatexAnswer()
