"""TensorFlow's C++ start-up lines are silenced by the commands: every command module and parser imports TensorFlow
only inside main(), after ``setup_logging`` has set ``TF_CPP_MIN_LOG_LEVEL`` (unless the user set it)."""
from __future__ import annotations

import os
import subprocess
import sys

COMMANDS = ("prepare", "search", "train", "evaluate", "export", "baseline", "compare", "predict")


def test_command_modules_do_not_import_tensorflow(project_root):
    code = (
        "import sys\n"
        + "".join(f"import emodarts_tf.commands.{name}\n" for name in COMMANDS)
        + "import emodarts_tf.evaluation.predict\n"
        # every parser too: main() builds it before setup_logging runs
        + "".join(f"emodarts_tf.commands.{name}.build_parser()\n" for name in COMMANDS)
        + "loaded = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        + "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(project_root), timeout=120)


def test_setup_logging_sets_the_level_unless_the_user_did(monkeypatch):
    from emodarts_tf.utils.logs import setup_logging

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    setup_logging(0)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"  # "2" still shows TF 2.16's "Unable to register" ERROR lines
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    setup_logging(0)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
