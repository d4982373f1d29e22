"""The child process of ``tsnctl bench predict``: ``tsnctl predict`` run cold, as a user runs it, reporting
its stage times (``deploy/predict.STAGE_SECONDS``) to the parent through a file."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def predict_child(result_file: str, args: list[str]) -> None:
    """Run ``tsnctl predict ARGS`` in this process and write its stage times to ``result_file``."""
    from tsnctl.cli import main  # imports no torch: predict may still set OpenMP's settings

    sys.argv = ["tsnctl", "predict", *args]
    try:
        main()
    except SystemExit as exc:
        if exc.code:
            raise
    from tsnctl.deploy.predict import STAGE_SECONDS

    Path(result_file).write_text(json.dumps(STAGE_SECONDS))
