"""Progress bars and log lines: a command whose stderr goes to a file writes no bar there (every line of the
file is a whole log line), and on a terminal a log record written while a bar is live starts on a line of
its own (checked by replaying the stream's bytes the way a terminal draws them)."""
from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

import numpy as np

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def _terminal_lines(text: str) -> list[str]:
    """The lines a terminal shows for ``text``: ``\\r`` returns to the start of the line and later characters
    overwrite earlier ones; ``\\n`` starts a new line."""
    lines, line, col = [], [], 0
    for ch in text:
        if ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        elif ch == "\r":
            col = 0
        else:
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
    if line:
        lines.append("".join(line).rstrip())
    return lines


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal():
    from emodarts_tf.utils.logs import progress_bars

    assert progress_bars(_Terminal()) is True
    assert progress_bars(io.StringIO()) is False
    closed = io.StringIO()
    closed.close()
    assert progress_bars(closed) is False


def test_a_record_during_a_live_bar_gets_a_line_of_its_own():
    from tqdm.auto import tqdm

    from emodarts_tf.utils.logs import ProgressAwareHandler

    def run(handler_class) -> str:
        stream = _Terminal()
        handler = handler_class(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger = logging.getLogger("emodarts_tf.test_progress_logs")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            bar = tqdm(total=4, desc="MFCC", file=stream, leave=False, mininterval=0)
            bar.update(2)
            logger.warning("a.wav: silent audio")
            bar.update(2)
            bar.close()
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
        return stream.getvalue()

    lines = _terminal_lines(run(ProgressAwareHandler))
    assert "WARNING a.wav: silent audio" in lines, lines
    # The plain handler, for contrast: the record is drawn after the bar, on the bar's line.
    plain = _terminal_lines(run(logging.StreamHandler))
    assert "WARNING a.wav: silent audio" not in plain
    assert any(line.startswith("MFCC") and line.endswith("WARNING a.wav: silent audio") for line in plain), plain


def test_a_log_file_holds_whole_log_lines_only(tmp_path, project_root):
    """``cli/prepare.py`` with stderr redirected to a file: an extraction that would draw a bar on a
    terminal leaves only log lines in the file, none glued to a bar."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    rows = ["path,label,speaker"]
    for speaker in ("s1", "s2"):
        for label, freq in (("ang", 220.0), ("sad", 330.0)):
            for i in range(3):
                t = np.arange(16000) / 16000.0
                y = 0.3 * np.sin(2 * np.pi * (freq + 10 * i) * t) + 0.01 * rng.standard_normal(16000)
                path = tmp_path / "wav" / f"{speaker}_{label}_{i}.wav"
                path.parent.mkdir(exist_ok=True)
                sf.write(path, y.astype(np.float32), 16000)
                rows.append(f"{path},{label},{speaker}")
    manifest = tmp_path / "corpus.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    log_file = tmp_path / "prepare.log"
    with open(log_file, "w") as err:
        done = subprocess.run(
            [sys.executable, "cli/prepare.py", "--data", "csv", "--root", str(manifest), "--cache",
             str(tmp_path / "cache"), "--out", str(tmp_path / "data"), "--set", "data.workers=1"],
            cwd=str(project_root), stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, timeout=300,
        )  # fmt: skip
    text = log_file.read_text(encoding="utf-8")
    assert done.returncode == 0, text[-3000:]
    assert "extracting MFCCs of 12 file(s)" in text  # the extraction ran (a bar on a terminal)
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and all(LOG_LINE.match(line) for line in lines), [line for line in lines if not LOG_LINE.match(line)]
