"""kit: a Kaggle image-competition toolkit (Dogs vs. Cats Redux first).

Stages, each `run(config) -> path`: download -> data -> train -> submit (and upload, predict, export,
lr-find, report). CLI: `python -m kit --help`; the layout is in README.md, "Layout".
"""
__version__ = "0.1.0"
