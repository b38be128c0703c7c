"""kit: a Kaggle image-competition toolkit (Dogs vs. Cats Redux first).

Stages, each `run(config) -> path`: download -> data -> train -> submit. CLI: `python -m kit --help`.
"""
__version__ = "0.1.0"
