"""pefthub.settings: a setting is declared once (default, help, bounds) and every check of it is one line."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pefthub import settings
from pefthub.errors import ConfigError
from pefthub.results import canonical_json
from pefthub.settings import Settings, setting


@dataclass
class Example(Settings):
    steps: int = setting(20, "optimizer steps", min=1)
    seed: int = setting(0, "seed", min=0)
    group: int = setting(4, "group size", min=2)
    share: float = setting(0.0, "a share", min=0, below=1)
    tying: float = setting(1.0, "a fraction", min=0, max=1)
    temperature: float = setting(1.0, "temperature", above=0)
    cap: int | str = setting(256, "a cap or 'task'", min=1, also=("task",))
    limit: int | None = setting(100, "examples (None: all)", min=1)
    mode: str = setting("a", "a mode", choices=("a", "b"))
    name: str = setting("x", "a name", nonempty=True)
    targets: list[str] = setting(["q"], "targets", nonempty=True)
    table: dict[str, int] = setting({}, "a table")
    flag: bool = setting(True, "a flag")

    @classmethod
    def where(cls) -> str:
        return "example"


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "example.steps: must be a positive integer (got 0)"),
    ("steps", 2.0, "example.steps: must be a positive integer (got 2.0)"),
    ("steps", True, "example.steps: must be a positive integer (got True)"),
    ("seed", -1, "example.seed: must be a non-negative integer (got -1)"),
    ("group", 1, "example.group: must be an integer >= 2 (got 1)"),
    ("share", 1.0, "example.share: must be a number in [0, 1) (got 1.0)"),
    ("tying", 1.5, "example.tying: must be a number in [0, 1] (got 1.5)"),
    ("temperature", 0, "example.temperature: must be a number > 0 (got 0)"),
    ("temperature", float("nan"), "example.temperature: must be a number > 0 (got nan)"),
    ("cap", "all", "example.cap: must be a positive integer (got 'all')"),
    ("limit", 0, "example.limit: must be a positive integer (got 0)"),
    ("mode", "c", "example.mode: must be one of a, b (got 'c')"),
    ("name", "", "example.name: must be a non-empty string (got '')"),
    ("targets", [], "example.targets: must be a non-empty list of strings (got [])"),
    ("targets", ["q", 3], "example.targets: must be a non-empty list of strings (got ['q', 3])"),
    ("table", {"a": "b"}, "example.table: must be a table of integers (got {'a': 'b'})"),
    ("flag", "yes", "example.flag: must be true or false (got 'yes')"),
])
def test_a_bad_value_is_one_line_naming_where_and_field(field, value, message):
    with pytest.raises(ConfigError) as info:
        Example(**{field: value})
    assert str(info.value) == message


def test_special_values_defaults_and_coercion():
    example = Example(cap="task", limit=None, share=0, tying=1)
    assert example.cap == "task" and example.limit is None
    assert isinstance(example.share, float) and isinstance(example.tying, float)  # 0 and 0.0: one setting, one hash
    assert canonical_json(Example(share=0).to_dict()) == canonical_json(Example(share=0.0).to_dict())
    first, second = Example(), Example()
    first.targets.append("k")
    assert second.targets == ["q"]  # a list default is copied per instance
    assert settings.defaults(Example)["steps"] == 20
    assert ("steps", "optimizer steps", 20) in Example.field_help()


def test_from_dict_refuses_unknown_keys_and_cross_field_rules_run_after_the_fields():
    with pytest.raises(ConfigError, match=r"^example: unknown field\(s\) stepz \(known: cap, "):
        Example.from_dict({"stepz": 1})

    @dataclass
    class Ordered(Settings):
        low: int = setting(1, "low", min=0)
        high: int = setting(2, "high", min=0)

        def validate(self) -> None:
            self._require(self.high >= self.low, "high", "must be >= low")

    with pytest.raises(ConfigError, match=r"^Ordered.low: must be a non-negative integer \(got -1\)$"):
        Ordered(low=-1)
    with pytest.raises(ConfigError, match=r"^Ordered.high: must be >= low \(got 0\)$"):
        Ordered(low=1, high=0)


def test_a_lone_value_is_checked_by_the_same_rules():
    assert settings.check(3, "grid.seeds", int, min=0) == 3
    assert settings.check(1, "lr", float, above=0) == 1.0
    with pytest.raises(ConfigError, match=r"^grid.seeds: must be a non-negative integer \(got -1\)$"):
        settings.check(-1, "grid.seeds", int, min=0)
    with pytest.raises(ConfigError, match=r"^eval.limit: must be a positive integer \(got 0\)$"):
        settings.check_field(Example, "limit", 0, "eval.limit")
    assert settings.check_field(Example, "cap", "task", "eval.cap") == "task"


def test_what_a_setting_accepts_is_said_from_its_declaration():
    accepts = settings.accepted(Example)
    assert accepts["steps"] == "a positive integer" and accepts["share"] == "a number in [0, 1)"
    assert accepts["cap"] == "a positive integer or 'task'" and accepts["limit"] == "a positive integer or None"
    assert accepts["mode"] == "one of a, b" and accepts["targets"] == "a non-empty list of strings"
