"""Logging set-up for the command-line tools (the package itself only calls `logging.getLogger`)."""
from __future__ import annotations

import logging
import os
import sys


def progress_bars(stream=None) -> bool:
    """Whether the commands draw progress bars (tqdm, on ``stream``: default ``sys.stderr``, where tqdm and the
    log lines go): only on a terminal. In a log file (stderr redirected) a bar is a run of carriage-return
    updates without a final newline, and the next log line would be written onto its last update."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressAwareHandler(logging.StreamHandler):
    """A StreamHandler that clears the live tqdm bars of its terminal before writing a record and draws them
    again after it (``tqdm.external_write_mode``), so that a record never starts at the end of a bar's line.
    Without tqdm imported it is a plain StreamHandler."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm_std = sys.modules.get("tqdm.std")
        if tqdm_std is None:
            super().emit(record)
            return
        with tqdm_std.tqdm.external_write_mode(file=self.stream):
            super().emit(record)


def setup_logging(verbosity: int = 0) -> None:
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[ProgressAwareHandler()])  # fmt: skip
    # TensorFlow's C++ start-up chatter; set here, at run time, not on import of the package. Every command's
    # main() calls this before anything imports TensorFlow (the commands import it lazily; tests check it).
    # "3", not "2": TF 2.16 logs its harmless "Unable to register cuFFT/cuDNN/cuBLAS factory" lines at ERROR
    # level, which "2" still shows. TF_CPP_MIN_LOG_LEVEL=0 (set by the user: setdefault) shows them all again.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
