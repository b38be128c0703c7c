"""From a trained run to files: the checked submission, single-image predictions, exports, upload.

    python -m kit submit --config configs/dogs-vs-cats-redux.yaml
    python -m kit predict photo.jpg more-photos/ [--run NAME]
    python -m kit export [--run NAME]
    python -m kit upload --config configs/dogs-vs-cats-redux.yaml
"""
