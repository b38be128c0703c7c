"""`make report`: the plots and report.html of a training run.

    python -m kit report --config configs/dogs-vs-cats-redux.yaml [--run NAME]

The run is --run (a folder, or a name under paths.runs_dir), else submit.run, else the newest run
with metrics. What the report holds and how it is written: kit/report/html.py (`build_report`,
which the train stage calls too).
"""
from __future__ import annotations

from pathlib import Path

from kit.config import Config
from kit.report.html import build_report
from kit.runs import RunDir


def run(cfg: Config, run_name: str | None = None) -> Path:
    """The `report` stage: rebuild the plots and report.html of a run; return report.html's path."""
    report = build_report(RunDir.find(cfg, run_name, needs="metrics"))
    print(f"report: {report}")
    return report
