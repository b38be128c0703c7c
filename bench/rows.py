"""The cells of BENCHMARKS.md's tables: a row (kit, baseline, ratio, target, met?) and a built section.

    from bench.rows import Row, Built, compare
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.common import ratio


@dataclass
class Row:
    label: str
    kit: float | str | None
    baseline: float | str | None
    ratio: float | None = None
    cpu_ratio: float | None = None
    target: str = "—"
    met: bool | None = None
    unit: str = "img/s"
    digits: int = 0


@dataclass
class Built:
    intro: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[str], list]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


def compare(label: str, kit: dict, base: dict, target: str = "—", at_least: float | None = None) -> Row:
    """A throughput row from two rate dicts (per_s, per_cpu_s)."""
    r = ratio(kit.get("per_s"), base.get("per_s"))
    return Row(label, kit.get("per_s"), base.get("per_s"), r, ratio(kit.get("per_cpu_s"), base.get("per_cpu_s")),
               target, None if at_least is None or r is None else r >= at_least)


def x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"
