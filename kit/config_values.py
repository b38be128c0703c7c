"""How config text is read and checked: the YAML file, `--set` items, and each value's type, choice and range.

    coerce("data.cache", "memroy", Literal["disk", "memory", "none"], {}, "--set", text=True)
    -> KitError: config key 'data.cache' must be one of disk, memory, none, got 'memroy' (--set)

Types understood: bool, int, float, str, Literal[...] of strings (a choice), bool | Literal["auto"] (true,
false, on, off, yes, no or auto) and list[...] of those. Ints pass as floats, not back; numbers must be
finite. A YAML file's values arrive parsed; a `--set` value arrives as text (`text=True`): a string key
takes it as written (`train.run_name=2024` is the name "2024"), any other key reads it as YAML, and a list
may be written `a,b,c` or `[a, b, c]`. Ranges come from the field's metadata (kit/config.py `setting`).
"""
from __future__ import annotations

import math
import re
import types
import typing
from pathlib import Path

import yaml

from kit.errors import KitError

WORDS = {"true": True, "false": False, "on": True, "off": False, "yes": True, "no": False}


def coerce(dotted: str, value: object, kind: object, meta: typing.Mapping, source: str, text: bool = False) -> object:
    """`value` as `kind` within the field's range, or a one-line KitError naming the key, value and what is allowed."""
    def bad(expected: str) -> KitError:
        return KitError(f"config key '{dotted}' must be {expected}, got {value!r} ({source})")

    if typing.get_origin(kind) is list:
        (item_kind,) = typing.get_args(kind)
        items, item_text = value, False
        if text and isinstance(value, str):
            if value.strip().startswith("["):  # --set submit.tta=[original, hflip]
                items = _yaml(value)
            else:  # --set submit.tta=original,hflip
                items, item_text = [v.strip() for v in value.split(",") if v.strip()], True
        if not isinstance(items, list):
            raise bad(f"a list of {_plural(item_kind)}")
        if meta.get("nonempty") and not items:
            raise bad(f"a non-empty list of {_plural(item_kind)}")
        return [coerce(f"{dotted}[{i}]", v, item_kind, meta, source, item_text) for i, v in enumerate(items)]
    if text and isinstance(value, str):
        value = _from_text(value, kind)
    checked = _scalar(value, kind, bad)
    _check_range(checked, meta, bad)
    return checked


def _yaml(raw: str) -> object:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # e.g. "a: b": a string the key's type then accepts or refuses


def _from_text(raw: str, kind: object) -> object:
    """A --set value: as written for a string or a choice of strings (quotes removed), else read as YAML."""
    if not raw.strip():
        return ""
    if kind is str or _is_choice(kind):
        parsed = _yaml(raw)
        return parsed if isinstance(parsed, str) else raw.strip()
    return _yaml(raw)


def _is_choice(kind: object) -> bool:
    return typing.get_origin(kind) is typing.Literal


def _is_auto(kind: object) -> bool:
    """bool | Literal["auto"], however spelled."""
    if typing.get_origin(kind) not in (typing.Union, types.UnionType):
        return False
    args = typing.get_args(kind)
    return bool in args and any(_is_choice(a) and typing.get_args(a) == ("auto",) for a in args) and len(args) == 2


def _scalar(value: object, kind: object, bad) -> object:
    if _is_choice(kind):
        choices = typing.get_args(kind)
        if isinstance(value, bool) or not isinstance(value, str) or value not in choices:
            raise bad("one of " + ", ".join(map(str, choices)))
        return value
    if _is_auto(kind):
        if isinstance(value, bool):
            return value
        word = value.strip().lower() if isinstance(value, str) else None
        if word in WORDS:
            return WORDS[word]
        if word == "auto":
            return "auto"
        raise bad("auto, true or false (on/off and yes/no work too)")
    if kind is bool:
        word = value.strip().lower() if isinstance(value, str) else None
        if word in WORDS:
            return WORDS[word]
        if not isinstance(value, bool):
            raise bad("true or false (on/off and yes/no work too)")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if kind is float:
        number = value
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise bad("a finite number")
        return float(number)
    if kind is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    raise TypeError(f"unsupported config type {kind}")


def _check_range(value: object, meta: typing.Mapping, bad) -> None:
    if isinstance(value, str):
        if meta.get("nonempty") and not value.strip():
            raise bad("a non-empty string")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = meta.get("min"), meta.get("max")
    above, below = meta.get("above"), meta.get("below")
    ok = ((low is None or value >= low) and (high is None or value <= high)
          and (above is None or value > above) and (below is None or value < below))
    if not ok:
        raise bad(range_text(meta))


def range_text(meta: typing.Mapping) -> str:
    """'from 8 to 2048', '>= 0 and < 1', '> 0': the range a field's metadata allows."""
    low, high, above, below = (meta.get(k) for k in ("min", "max", "above", "below"))
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}"
    parts = ([f">= {low:g}"] if low is not None else []) + ([f"> {above:g}"] if above is not None else [])
    parts += ([f"<= {high:g}"] if high is not None else []) + ([f"< {below:g}"] if below is not None else [])
    return " and ".join(parts)


def _plural(kind: object) -> str:
    if _is_choice(kind):
        return "values from " + ", ".join(map(str, typing.get_args(kind)))
    return {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}.get(kind, str(kind))


def read_yaml(path: Path) -> object:
    """The YAML file's data, or a KitError naming the file, the line and the problem."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as error:
        raise KitError(f"config file {path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise KitError(f"config file {path} is not valid YAML{where} ({problem}): fix it") from None


def parse_overrides(items: typing.Iterable[str]) -> list[str]:
    """Split Make-style `SET="a.b=1 c.d=2"` strings into single `key=value` items.

    Only whitespace before the next `section.key=` starts a new item, so a value may hold spaces:
    `SET="paths.data_dir=/x/my data data.seed=7"` is two items."""
    return [part.strip() for item in items
            for part in re.split(r"\s+(?=[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*=)", item.strip()) if part.strip()]
