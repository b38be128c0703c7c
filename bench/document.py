"""BENCHMARKS.md from the bench's results: one table per section (kit, baseline, ratio, target, met?).

    from bench.document import render; text = render(results)      (bench/run.py writes the file)

Every ratio is kit / baseline from the same run, so a number above 1 means kit is faster (for
times and memory the ratio is baseline / kit, said so in the row). Throughput rows also give the
ratio of images per CPU-second, which other jobs loading the machine disturb far less.
"""
from __future__ import annotations

from bench import sections as S


def fmt(value, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


def fmt_ratio(value) -> str:
    return "—" if value is None else f"{value:.2f}x"


def met(ok) -> str:
    return "—" if ok is None else ("**yes**" if ok else "**no**")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rate_row(row: S.Row) -> list[str]:
    return [row.label, fmt(row.kit, row.digits, row.unit), fmt(row.baseline, row.digits, row.unit),
            fmt_ratio(row.ratio), fmt_ratio(row.cpu_ratio), row.target, met(row.met)]


def section_header(title: str, info: dict) -> list[str]:
    lines = [f"## {title}", ""]
    if info.get("load_before") is not None:
        lines.append(f"Load average (1/5/15 min) at the start: {'/'.join(map(str, info['load_before']))}, "
                     f"at the end: {'/'.join(map(str, info['load_after']))}; section took {info['seconds']:.0f} s.")
        lines.append("")
    return lines


def render_section(name: str, title: str, info: dict | None) -> str:
    if info is None:
        return f"## {title}\n\n{S.ON_REQUEST.get(name, 'Not run (`--only` left it out).')}\n"
    lines = section_header(title, info)
    if "skipped" in info:
        return "\n".join(lines + [f"Skipped: {info['skipped']}", ""])
    if "error" in info:
        return "\n".join(lines + [f"**Failed**: {info['error']}", ""])
    built = S.BUILDERS[name](info["result"])
    lines += built.intro + [""]
    for caption, header, rows in built.tables:
        if caption:
            lines += [caption, ""]
        lines += [table(header, [rate_row(r) if isinstance(r, S.Row) else r for r in rows]), ""]
    lines += [f"**Findings.** {' '.join(built.findings)}", ""]
    return "\n".join(lines)


HOW_TO_RUN = [
    "## How to run",
    "",
    "```",
    "make bench                 # the full bench (~40 min; writes this file)",
    "make bench QUICK=1         # a smoke run, tiny sizes (a few minutes; writes this file, labelled quick)",
    "KIT_REAL_COMPETITION=/path/to/dogs-vs-cats-redux-kernels-edition.zip \\",
    "KIT_KERAS_WEIGHTS=/path/to/keras/models make bench      # real photos, ImageNet weights, end-to-end rows",
    "make bench BENCH_ARGS=\"--skip-finetune --only pipeline,features\"",
    "make bench BENCH_ARGS=\"--only device\"    # re-measure one section: the others keep their numbers here",
    "KIT_REHEARSAL=/path/to/rehearsal.zip make bench BENCH_ARGS=\"--only full\"  # section 6, full size (~50 min; "
    "never in a default run; without KIT_REHEARSAL one is built)",
    ".venv/bin/python bench/run.py --from-json results.json   # rewrite this file from saved numbers (--json)",
    "```",
    "",
]


def intro(quick: bool) -> list[str]:
    lines = ["# BENCHMARKS", ""]
    if quick:
        lines += ["> **QUICK RUN** (`make bench QUICK=1`): tiny sizes, a smoke test of the bench itself. "
                  "The numbers below say nothing about speed; run `make bench` for the real figures.", ""]
    return lines + [
        "Every speed claim kit makes, measured against a baseline run side by side on the same machine in the same "
        "run (alternating where both run in one process, back to back where each needs its own). "
        "Ratios are kit / baseline: above 1 means kit is faster. Throughput is also compared per CPU-second "
        "(process CPU time, all threads), which other jobs loading the cores disturb far less than wall time.", ""]


def run_info(meta: dict) -> list[str]:
    machine, versions = meta["machine"], meta["machine"]["versions"]
    lines = [
        "## This run", "",
        f"- date: {meta['date']}; command: `{meta['command']}`; wall time {meta['seconds'] / 60:.1f} min",
        f"- machine: {machine['cpu']}, {machine['cores']} cores (`nproc` {machine['nproc']}), "
        f"{fmt(machine['memory_gb'], 1)} GB memory, {machine['os']}",
        "- libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "git_commit" and v),
        f"- kit commit: {versions.get('git_commit') or 'unknown'}",
        f"- pictures: {meta['data']}",
        f"- backbone weights: {meta['weights']}",
        f"- load average (1/5/15 min) at the start: {'/'.join(map(str, meta['load_start']))}, "
        f"at the end: {'/'.join(map(str, meta['load_end']))} on {machine['nproc']} cores"]
    highest = max(meta["load_start"][0], meta["load_end"][0], meta.get("load_max", 0))
    if highest > 1.5 * machine["nproc"]:
        lines += ["", f"> **The machine was loaded** by other jobs during this run (load average up to "
                      f"{highest:.1f} on {machine['nproc']} cores): absolute images/s are lower than on an idle "
                      "machine; side-by-side ratios, and above all the CPU-time ratios, remain meaningful."]
    return lines + [""]


def summary(sections: dict) -> list[str]:
    """Every row that has a target, from all sections, in one table."""
    rows = []
    for name, title in S.TITLES.items():
        info = sections.get(name) or {}
        if "result" not in info:
            continue
        for _, _, table_rows in S.BUILDERS[name](info["result"]).tables:
            for row in table_rows:
                if isinstance(row, S.Row) and row.met is not None:
                    rows.append([title.split(" ", 1)[0].rstrip("."), *rate_row(row)])
    if not rows:
        return []
    header = ["§", "measure", "kit", "baseline", "ratio", "ratio (CPU time)", "target", "met?"]
    return ["## Targets at a glance", "", table(header, rows), ""]


def render(results: dict) -> str:
    meta, sections = results["meta"], results["sections"]
    lines = intro(meta["quick"]) + HOW_TO_RUN + run_info(meta) + summary(sections)
    lines += [render_section(name, title, sections.get(name)) for name, title in S.TITLES.items()]
    lines += ["## Method", "", *[f"- {line}" for line in S.METHOD], ""]
    return "\n".join(lines)


# ---- a partial run (--only): its sections spliced into the existing document --------------------------

def _blocks(text: str) -> list[str]:
    """The document cut before each "## " heading (the first block is what comes before any)."""
    blocks, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("## ") and current:
            blocks.append("".join(current))
            current = []
        current.append(line)
    return blocks + ["".join(current)] if current else blocks


def _find(blocks: list[str], heading: str) -> int | None:
    """The block whose heading starts with `heading` ("## 3." finds section 3 whatever its title)."""
    first = [b.split("\n", 1)[0].rstrip() for b in blocks]
    return next((i for i, line in enumerate(first) if line == heading or line.startswith(heading + " ")), None)


def _number(name: str) -> str:
    return S.TITLES[name].split(" ", 1)[0].rstrip(".")


def _splice_targets(old: str, new: str | None, numbers: list[str]) -> str:
    """"Targets at a glance" with the rows of `numbers` from `new`, the other rows as they were, in section order."""
    order = [_number(n) for n in S.TITLES]
    rows = lambda block: [ln for ln in block.splitlines()[4:] if ln.startswith("| ")]  # noqa: E731 — after the header
    section = lambda row: row.split("|")[1].strip()  # noqa: E731
    kept = [r for r in rows(old) if section(r) not in numbers] + [r for r in rows(new or "") if section(r) in numbers]
    kept.sort(key=lambda r: order.index(section(r)) if section(r) in order else len(order))
    return "\n".join(old.splitlines()[:4] + kept) + "\n\n"


def _heading(name: str) -> str:
    return "## " + S.TITLES[name].split(" ", 1)[0]  # "## 3.": found whatever the section's title says


def _put_section(blocks: list[str], name: str, block: str) -> None:
    """Replace section `name` in `blocks`; one the document did not have goes before the next section it has."""
    at = _find(blocks, _heading(name))
    if at is not None:
        blocks[at] = block
        return
    names = list(S.TITLES)
    later = [_find(blocks, _heading(n)) for n in names[names.index(name) + 1:]] + [_find(blocks, "## Method")]
    blocks.insert(min([i for i in later if i is not None], default=len(blocks)), block)


def _note_rerun(block: str, numbers: list[str], meta: dict, quick: bool) -> str:
    """"This run" with one "- §3 re-measured on ..." line per re-measured section (replacing an earlier one)."""
    lines = [ln for ln in block.rstrip("\n").splitlines() if not any(ln.startswith(f"- §{n} re-measured")
                                                                    for n in numbers)]
    commit = meta["machine"]["versions"].get("git_commit") or "unknown"
    loads = f"{'/'.join(map(str, meta['load_start']))}, at the end {'/'.join(map(str, meta['load_end']))}"
    notes = [f"- §{n} re-measured on {meta['date']} by `{meta['command']}` (kit commit {commit}; load average at the "
             f"start {loads}{'; QUICK sizes' if quick else ''}); the other sections are from the run above"
             for n in numbers]
    last = max((i for i, ln in enumerate(lines) if ln.startswith("- ")), default=len(lines) - 1)
    return "\n".join(lines[:last + 1] + notes + lines[last + 1:]) + "\n\n"


def splice(old: str, new: str, names: list[str], meta: dict) -> str:
    """`old` (the document) with the sections `names` and their "Targets at a glance" rows taken from `new`, the
    document of a partial run (`--only`); "This run" says when those were re-measured. Other numbers are kept."""
    blocks, fresh = _blocks(old), _blocks(new)
    numbers = [_number(n) for n in names]
    quick = bool(meta.get("quick")) and "QUICK RUN" not in blocks[0]  # quick numbers in a full run's document
    for name in names:
        block = fresh[_find(fresh, _heading(name))]
        if quick:
            title, _, rest = block.partition("\n\n")
            block = (f"{title}\n\n> **QUICK numbers** (`--quick`, tiny sizes): this section says nothing about speed; "
                     f"the others are from a full run.\n\n{rest}")
        _put_section(blocks, name, block)
    at, new_at = _find(blocks, "## How to run"), _find(fresh, "## How to run")
    if at is not None and new_at is not None:
        blocks[at] = fresh[new_at]
    at, new_at = _find(blocks, "## Targets at a glance"), _find(fresh, "## Targets at a glance")
    if at is not None:
        blocks[at] = _splice_targets(blocks[at], None if new_at is None else fresh[new_at], numbers)
    at = _find(blocks, "## This run")
    if at is not None:
        blocks[at] = _note_rerun(blocks[at], numbers, meta, quick)
    return "".join(blocks)


def keep(old: str, new: str, names: list[str]) -> str:
    """`new` (a whole run's document) with the sections `names`, which that run did not measure (ON_REQUEST), and
    their "Targets at a glance" rows as `old` has them: a default `make bench` does not lose the full-size numbers."""
    blocks, previous, numbers = _blocks(new), _blocks(old), []
    for name in names:
        at = _find(previous, _heading(name))
        if at is not None:
            _put_section(blocks, name, previous[at])
            numbers.append(_number(name))
    at, old_at = _find(blocks, "## Targets at a glance"), _find(previous, "## Targets at a glance")
    if numbers and at is not None and old_at is not None:
        blocks[at] = _splice_targets(blocks[at], previous[old_at], numbers)
    return "".join(blocks)


def rendered(results: dict, out) -> str:
    """The document for `out`: a partial run's (--only) sections spliced into the existing one, whose others are
    kept; a whole run's, keeping the existing document's on-request sections it did not run."""
    from pathlib import Path

    text, only, out = render(results), results["meta"].get("only"), Path(out)
    if not out.is_file():
        return text
    if only:
        return splice(out.read_text(), text, only, results["meta"])
    return keep(out.read_text(), text, [n for n in S.ON_REQUEST if n not in results["sections"]])


def measuring_arguments(argv: list[str]) -> list[str]:
    """The arguments that change what is measured (not where the outputs go), for the document's command line."""
    plumbing, shown, skip = {"--out", "--json", "--workdir", "--keep", "--quick"}, [], False
    for arg in argv:
        name = arg.split("=", 1)[0]
        if skip:
            skip = False
        elif name in plumbing:
            skip = "=" not in arg and name not in ("--keep", "--quick")
        else:
            shown.append(arg)
    return shown
