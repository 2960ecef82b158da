"""The one way to declare a setting and check it: :func:`setting` declares a config-dataclass field
once (default, help, bounds or choices) and :func:`validate` checks an object's fields against
their declarations; :func:`check` applies the same rule to a value that has no dataclass (a suite's
grid axis, a CLI flag). Every failure is one :class:`~pefthub.errors.ConfigError` line,
``<where>.<name>: must be <what> (got <value>)``.

Method configs, trainer options, task parameters, the budget and evaluation schema, probe
settings and suite files all declare their settings here (see ``docs/architecture.md``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pefthub.errors import ConfigError

__all__ = ["Rule", "Settings", "accepted", "build", "check", "check_field", "check_known", "default_of", "defaults", "field_help", "rule_of",
           "setting", "validate"]


@dataclass(frozen=True)
class Rule:
    """What a setting accepts: its type (from the field's annotation, or given), inclusive ``min``/``max``,
    exclusive ``above``/``below``, ``choices``, ``also`` (special values accepted besides), and
    ``nonempty`` for strings and lists."""

    help: str = ""
    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[Any, ...] | None = None
    also: tuple[Any, ...] = ()
    nonempty: bool = False

    def check(self, value: Any, key: str, annotation: Any = Any) -> Any:
        """``value`` (an integer given for a float becomes a float: 1 and 1.0 are one setting, one
        config hash), or one :class:`ConfigError` line naming ``key``."""
        if not self.accepts(value, annotation):
            raise ConfigError(f"{key}: must be {self.describe(annotation)} (got {value!r})")
        if _kind(annotation) is float and _is_int(value):
            return float(value)
        return value

    def accepts(self, value: Any, annotation: Any = Any) -> bool:
        """Whether ``value`` is a valid value of a setting of type ``annotation`` under this rule."""
        if (not isinstance(value, bool) and value in self.also) or (value is None and _allows_none(annotation)):
            return True
        kind = _kind(annotation)
        if kind in (int, float):
            return (_is_int(value) if kind is int else _is_number(value)) and self._within(value) and \
                (not self.choices or value in self.choices)
        if kind is str:
            return isinstance(value, str) and (value in self.choices if self.choices else bool(value) or not self.nonempty)
        if kind in (list, tuple, dict):
            return _matches(value, _option(annotation, kind)) and (bool(value) or not self.nonempty) and \
                (not self.choices or all(v in self.choices for v in value))
        return _matches(value, annotation)

    def describe(self, annotation: Any = Any) -> str:
        """What the setting accepts, as errors and the docs say it ("a positive integer", "one of a, b")."""
        kind = _kind(annotation)
        choices = f"one of {', '.join(map(str, self.choices))}" if self.choices else ""
        if kind is bool:
            return "true or false"
        if kind in (int, float):
            if choices:
                return choices
            bounds = self._bounds()
            if kind is int and bounds in (">= 0", ">= 1"):
                return "a positive integer" if bounds == ">= 1" else "a non-negative integer"
            return f"{'an integer' if kind is int else 'a number'}{' ' + bounds if bounds else ''}"
        if kind is str:
            return choices or ("a non-empty string" if self.nonempty else "a string")
        if kind in (list, tuple, dict):
            if self.choices:
                return f"a list of {', '.join(map(str, self.choices))}"
            what = _describe(_option(annotation, kind))
            return what.replace("a ", "a non-empty ", 1) if self.nonempty else what
        return " or ".join(_type_name(o) for o in _options(annotation))

    def _within(self, value: float) -> bool:
        return not ((self.min is not None and value < self.min) or (self.max is not None and value > self.max)
                    or (self.above is not None and value <= self.above)
                    or (self.below is not None and value >= self.below))

    def _bounds(self) -> str:
        low = (f"{self.min:g}", "[") if self.min is not None else (f"{self.above:g}", "(") \
            if self.above is not None else None
        high = (f"{self.max:g}", "]") if self.max is not None else (f"{self.below:g}", ")") \
            if self.below is not None else None
        if low and high:
            return f"in {low[1]}{low[0]}, {high[0]}{high[1]}"
        if low:
            return f"{'>=' if low[1] == '[' else '>'} {low[0]}"
        if high:
            return f"{'<=' if high[1] == ']' else '<'} {high[0]}"
        return ""


def setting(default: Any = dataclasses.MISSING, help: str = "", *, min: float | None = None,
            max: float | None = None, above: float | None = None, below: float | None = None,
            choices: tuple[Any, ...] | None = None, also: tuple[Any, ...] = (), nonempty: bool = False,
            **kwargs: Any) -> Any:
    """A config-dataclass field declared once: its default (lists and dicts copied per instance),
    help text (`pefthub methods`, `pefthub tasks`, the docs) and the :class:`Rule` :func:`validate`
    checks it against."""
    rule = Rule(help, min, max, above, below, tuple(choices) if choices else None, tuple(also), nonempty)
    metadata = {"help": help, "rule": rule}
    if isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: copy.copy(value), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def rule_of(cls: type, name: str) -> Rule:
    """The :class:`Rule` declared for field ``name`` of ``cls`` (a plain ``Rule`` when it has none)."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata.get("rule", Rule())


def check_field(cls: type, name: str, value: Any, key: str) -> Any:
    """``value`` checked against field ``name`` of the dataclass ``cls`` (its type and :class:`Rule`),
    for a caller that takes that setting alone (a function argument, a CLI flag); errors name ``key``."""
    return rule_of(cls, name).check(value, key, typing.get_type_hints(cls)[name])


def check(value: Any, key: str, annotation: Any = Any, **rule: Any) -> Any:
    """``value`` checked against a rule given inline (the keyword arguments of :class:`Rule`), for a
    setting that is no dataclass field; errors name ``key``."""
    return Rule(**rule).check(value, key, annotation)


def validate(obj: Any, where: str = "") -> None:
    """Check every declared field of the dataclass ``obj`` (type from its annotation, then its
    :class:`Rule`); errors read ``<where>.<name>: ...``. Integers given for floats become floats."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        rule = f.metadata.get("rule")
        if rule is None:
            continue
        value = getattr(obj, f.name)
        checked = rule.check(value, f"{where}.{f.name}" if where else f.name, hints[f.name])
        if checked is not value:
            object.__setattr__(obj, f.name, checked)


def default_of(f: dataclasses.Field) -> Any:
    """A field's default (``default_factory`` called), None when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default of a config dataclass, read from its declarations at call time."""
    return {f.name: default_of(f) for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def field_help(cls: type) -> list[tuple[str, str, Any]]:
    """(name, help, default) for each field, for CLI listings and generated docs."""
    return [(f.name, f.metadata.get("help", ""), default_of(f)) for f in dataclasses.fields(cls)]


def accepted(cls: type) -> dict[str, str]:
    """Field name -> what it accepts ("a positive integer", "one of a, b"), from its declaration."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        rule = f.metadata.get("rule", Rule())
        extra = [repr(v) for v in rule.also] + (["None"] if _allows_none(hints[f.name]) else [])
        out[f.name] = rule.describe(hints[f.name]) + (f" or {' or '.join(extra)}" if extra else "")
    return out


def check_known(cls: type, data: dict[str, Any], where: str, noun: str = "field") -> None:
    """Raise :class:`ConfigError` naming ``where`` when ``data`` has keys that ``cls`` has no field for."""
    names = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown {noun}(s) {', '.join(unknown)} (known: {', '.join(names) or 'none'})")


def build(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """``cls`` from a plain dict: unknown keys refused, defaults filled in from the declarations, a
    wrong argument turned into one :class:`ConfigError` line."""
    data = dict(data or {})
    check_known(cls, data, where)
    try:
        return cls(**{**defaults(cls), **data})
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass
class Settings:
    """Base of a config dataclass (method configs, trainer options, budget, evaluation, probes):
    :func:`setting` fields, checked by :func:`validate` on construction, then by :meth:`validate`'s
    cross-field rules; read from and written to plain dicts."""

    def __post_init__(self) -> None:
        validate(self, self.where())
        self.validate()

    def validate(self) -> None:
        """Rules that involve several fields (each field's own rule is declared with :func:`setting`);
        raise :class:`ConfigError` through :meth:`_require`."""

    @classmethod
    def where(cls) -> str:
        """How errors name this object (``<where>.<field>: ...``)."""
        return cls.__name__

    def _require(self, condition: bool, field_name: str, message: str) -> None:
        if not condition:
            prefix = f"{self.where()}.{field_name}" if self.where() else field_name
            raise ConfigError(f"{prefix}: {message} (got {getattr(self, field_name)!r})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Any:
        return build(cls, data, cls.where())

    @classmethod
    def field_help(cls) -> list[tuple[str, str, Any]]:
        """(name, help, default) for each field, for CLI listings and generated docs."""
        return field_help(cls)


# ---- types -----------------------------------------------------------------------------------
def _options(annotation: Any) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _allows_none(annotation: Any) -> bool:
    return type(None) in _options(annotation)


def _kind(annotation: Any) -> Any:
    """The type a setting's checks follow: of a union, the first of bool, int, float, str, list, tuple, dict."""
    kinds = [typing.get_origin(o) or o for o in _options(annotation)]
    return next((t for t in (bool, int, float, str, list, tuple, dict) if t in kinds), None)


def _option(annotation: Any, kind: Any) -> Any:
    """The member of a union ``annotation`` whose type is ``kind`` (``list[str]`` of ``list[str] | None``)."""
    return next(o for o in _options(annotation) if (typing.get_origin(o) or o) is kind)


def _describe(annotation: Any) -> str:
    """How an error names a list or table type: "a list of strings", "a table"."""
    origin, args = typing.get_origin(annotation) or annotation, typing.get_args(annotation)
    plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
    if origin is dict:
        return f"a table of {plural.get(args[1], _type_name(args[1]))}" if len(args) == 2 else "a table"
    return f"a list of {plural.get(args[0], _type_name(args[0]))}" if args else "a list"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` has the type ``annotation`` names, items of lists and tables included."""
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if annotation is float:
        return _is_number(value)
    if annotation is int:
        return _is_int(value)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(annotation))
    origin, args = typing.get_origin(annotation) or annotation, typing.get_args(annotation)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    if not isinstance(value, origin):
        return False
    if origin is dict and len(args) == 2:
        return all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    return True


def _type_name(annotation: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "None"}.get(annotation, getattr(annotation, "__name__", str(annotation)))
