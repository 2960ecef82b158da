"""Built-in tasks loaded from the Hugging Face hub with ``datasets``: ``gsm8k`` (openai/gsm8k) and
``math500`` (HuggingFaceH4/MATH-500). Without hub access, point them at local files with the
``data_files`` or ``path`` task parameters (see docs/tasks.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pefthub.hookspecs import hookimpl
from pefthub.tasks.answers import BOXED_LATEX, NUMERIC, format_number, parse_number
from pefthub.tasks.base import Example, param
from pefthub.tasks.hub import HubParams, HubSourceParams, HubTask

_CALCULATOR = re.compile(r"<<[^>]*>>")


class Gsm8k(HubTask):
    name = "gsm8k"
    description = ("Grade-school math word problems (openai/gsm8k, config main): 1,319 test problems; "
                   "validation carved from train; worked solutions for SFT")
    hub_path = "openai/gsm8k"
    hub_config = "main"
    columns = ("question", "answer")
    answer_format = NUMERIC
    params_class = HubParams

    def make_example(self, row: dict[str, Any], index: int) -> Example | None:
        body, sep, final = str(row["answer"]).rpartition("####")
        gold = parse_number(final)
        if not sep or gold is None:
            return None
        answer = format_number(gold)
        # The dataset's "<<48/2=24>>" calculator annotations are tool calls, not text to imitate.
        steps = _CALCULATOR.sub("", body).strip()
        return Example(id=str(index), question=str(row["question"]).strip(), answer=answer,
                       solution=f"{steps}\n{NUMERIC.answer_line(answer)}", metadata={"row": index})


@dataclass
class Math500Params(HubSourceParams):
    levels: list[int] = param([1, 2, 3, 4, 5], "MATH difficulty levels to keep (1-5)", nonempty=True,
                              choices=(1, 2, 3, 4, 5))
    subjects: list[str] = param([], "MATH subjects to keep, e.g. [\"Algebra\"] (empty: all)")


class Math500(HubTask):
    name = "math500"
    description = ("500 competition problems (HuggingFaceH4/MATH-500), LaTeX answers in \\boxed{} checked "
                   "with math-verify; a test set only (no train or validation split)")
    hub_path = "HuggingFaceH4/MATH-500"
    hub_splits = {"test": "test"}
    columns = ("problem", "solution", "answer", "subject", "level", "unique_id")
    answer_format = BOXED_LATEX
    params_class = Math500Params
    reward = "math_verify"
    format_reward = "format_boxed"

    def make_example(self, row: dict[str, Any], index: int) -> Example | None:
        p = self.params
        if int(row["level"]) not in p.levels or (p.subjects and row["subject"] not in p.subjects):
            return None
        return Example(id=str(index), question=str(row["problem"]).strip(), answer=str(row["answer"]).strip(),
                       solution=str(row["solution"]).strip(),
                       metadata={"subject": row["subject"], "level": int(row["level"]),
                                 "unique_id": row["unique_id"]})


@hookimpl
def register_tasks(register) -> None:
    register(Gsm8k)
    register(Math500)
