"""submissions/index.html: the ledger as a table and validation log loss against Kaggle's score, as a plot.

    python -m kit submissions      # refreshes the scores from Kaggle, then redraws this page

Redrawn by `make submit`, `make upload` and `kit submissions` after they change the ledger
(kit/submit/ledger.py). Static: one HTML file, one PNG (ledger.png) beside it, no script. Each row links to
its run's report.html when the run folder is known. In the plot, a point under the y = x line scored better
on Kaggle than on validation; far above it, the validation split does not predict the leaderboard.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

from matplotlib.figure import Figure

from kit.fsutil import atomic_path, write_text_atomic

PAGE, PLOT = "index.html", "ledger.png"
SHOWN = ["time", "file", "run", "val_log_loss", "public_score", "private_score", "kaggle_status", "calibration",
         "snapshots", "members", "config_changes", "message"]


def number(text) -> float | None:
    """`text` as a float, None when it is empty or not a number (the ledger holds strings)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def kaggle_score(row: dict) -> float | None:
    """The score a ledger row got on Kaggle: private (a finished competition's final one), else public."""
    private = number(row.get("private_score"))
    return private if private is not None else number(row.get("public_score"))


def plot(rows: list[dict], out_path: Path) -> Path:
    """Validation log loss (x) against Kaggle's score (y: private, else public), with y = x."""
    fig = Figure(figsize=(5.5, 5), dpi=100)
    ax = fig.add_subplot()
    points = [(number(r.get("val_log_loss")), kaggle_score(r), r.get("run", "")) for r in rows]
    points = [p for p in points if p[0] is not None and p[1] is not None]
    if points:
        xs, ys, names = zip(*points)
        top = max(max(xs), max(ys)) * 1.1
        ax.plot([0, top], [0, top], color="grey", linestyle="--", label="y = x")
        ax.scatter(xs, ys, color="tab:blue", zorder=3, label="submission")
        for x, y, name in points:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, "no Kaggle scores yet:\n`kit upload --wait` or `kit submissions`", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_xlabel("validation log loss (as submitted)")
    ax.set_ylabel("Kaggle log loss (private, else public)")
    ax.set_title(f"{len(points)} of {len(rows)} submissions scored")
    fig.tight_layout()
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return out_path


def _cell(row: dict, column: str, folder: Path) -> str:
    text = html.escape(str(row.get(column, "")))
    report = row.get("report") or ""
    if column == "run" and report and Path(report).is_file():
        href = os.path.relpath(report, folder)
        return f'<a href="{html.escape(Path(href).as_posix())}">{text}</a>'
    return text


def write_page(folder: Path, rows: list[dict]) -> Path:
    """index.html and ledger.png in the submissions folder; returns the page's path."""
    plot(rows, folder / PLOT)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in SHOWN)
    body = "\n".join("<tr>" + "".join(f"<td>{_cell(r, c, folder)}</td>" for c in SHOWN) + "</tr>" for r in rows)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>kit: submissions</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}} th{{background:#eee}}</style>
</head><body>
<h1>Submissions</h1>
<p>{len(rows)} in the ledger (ledger.csv). Refresh Kaggle's scores with <code>kit submissions</code>.</p>
<img id="plot" src="{PLOT}" alt="validation log loss against Kaggle's score" width="550" height="500">
<table id="ledger"><thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody></table>
</body></html>
"""
    out = folder / PAGE
    write_text_atomic(out, page)
    return out
