"""Logging set-up for the command-line tools (the package itself only calls `logging.getLogger`)."""
from __future__ import annotations

import logging
import os


def setup_logging(verbosity: int = 0) -> None:
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # TensorFlow's C++ start-up chatter; set here, at run time, not on import of the package. Every command's
    # main() calls this before anything imports TensorFlow (the commands import it lazily; tests check it).
    # "3", not "2": TF 2.16 logs its harmless "Unable to register cuFFT/cuDNN/cuBLAS factory" lines at ERROR
    # level, which "2" still shows. TF_CPP_MIN_LOG_LEVEL=0 (set by the user: setdefault) shows them all again.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
