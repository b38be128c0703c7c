"""What a run shows a person: plots and report.html.

    python -m kit report --config configs/dogs-vs-cats-redux.yaml [--run NAME]
"""
