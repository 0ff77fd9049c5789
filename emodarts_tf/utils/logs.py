"""Logging set-up for the command-line tools (the package itself only calls `logging.getLogger`)."""
from __future__ import annotations

import logging
import os


def setup_logging(verbosity: int = 0) -> None:
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # TensorFlow's C++ start-up chatter; set here, at run time, not on import of the package.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
