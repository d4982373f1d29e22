"""``tsnctl bench``: measured speed of the data path, the model and extraction, side by side with a
re-implementation of the reference's per-image pipeline (``reference.py``)."""
