"""Arguments shared by every command (``cli/*.py``), and their mapping onto the typed config."""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path
from typing import Callable

from emodarts_tf.config import ExperimentConfig, load_config
from emodarts_tf.utils.io import find_disk_full
from emodarts_tf.utils.logs import setup_logging
from emodarts_tf.utils.threads import configure_threads

CORPORA = ("iemocap", "msp-improv", "msp-podcast", "emodb", "csv", "demo")

# Config used when --config is not given: the demo corpus gets the small demo config, real corpora the
# paper's settings.
DEFAULT_CONFIG = {"demo": "demo.yaml"}


def add_common_args(parser: argparse.ArgumentParser, data_required: bool = True) -> None:
    parser.add_argument("--data", choices=CORPORA, required=data_required, help="corpus to use")
    parser.add_argument("--root", help="corpus root folder (for csv: the manifest file)")
    parser.add_argument("--protocol", help="fold protocol (default: the corpus's standard one)")
    parser.add_argument(
        "--config", help="YAML config (a path or a name in configs/); default: paper.yaml, demo.yaml for --data demo"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set search.batch_size=16 (repeatable)",
    )
    parser.add_argument("--cache", help="feature cache folder (default: data.cache_dir of the config)")
    parser.add_argument("--encoding", help="text encoding of a csv manifest (default: data.encoding, utf-8-sig: "
                                               "UTF-8 with or without a BOM; e.g. latin-1)")
    parser.add_argument("--seed", type=int, help="random seed (default: the config's)")
    parser.add_argument("-v", "--verbose", action="count", default=0)


def config_from_args(args: argparse.Namespace, epochs_key: str | None = None, threads: bool = True) -> ExperimentConfig:
    """Build the config: file, then the dedicated flags, then ``--set`` overrides (last wins).

    With ``threads`` (commands that run TensorFlow) it also sizes TensorFlow's thread pools by the config's
    ``runtime`` section before the command's first op (:func:`~emodarts_tf.utils.threads.configure_threads`);
    a command that does not run TensorFlow passes False and does not import it.

    Raises:
        ValueError: a bad config, override or ``runtime`` thread count, or a corpus without ``--root`` (the
            commands report it in one line, exit status 2).
    """
    setup_logging(getattr(args, "verbose", 0))
    data = getattr(args, "data", None)
    path = args.config or DEFAULT_CONFIG.get(data or "", "paper.yaml")
    updates: dict = {"data": {}}
    if data:
        updates["data"]["corpus"] = data
    if getattr(args, "root", None):
        updates["data"]["root"] = str(Path(args.root).expanduser())
    if getattr(args, "protocol", None):
        updates["data"]["protocol"] = args.protocol
    if getattr(args, "cache", None):
        updates["data"]["cache_dir"] = args.cache
    if getattr(args, "encoding", None):
        updates["data"]["encoding"] = args.encoding
    if getattr(args, "seed", None) is not None:
        updates["seed"] = args.seed
    if epochs_key and getattr(args, "epochs", None) is not None:
        section, key = epochs_key.split(".")
        updates.setdefault(section, {})[key] = args.epochs
    config = load_config(path, overrides=list(getattr(args, "overrides", []) or []), updates=updates)
    if config.data.corpus not in ("demo",) and not config.data.root:
        raise ValueError(f"--data {config.data.corpus} needs --root (the corpus folder, or the CSV manifest for csv)")
    logging.getLogger(__name__).debug("config: %s", config)
    if threads:
        configure_threads(config.runtime.inter_op_threads, config.runtime.intra_op_threads)
    return config


def parse_folds(text: str | None, available: list[int], flag: str = "--folds") -> list[int]:
    """``all`` (or None) -> every fold; ``1,3`` -> [1, 3]; each must exist.

    Raises:
        ValueError: naming ``flag`` and the bad value (the commands report it in one line, exit status 2).
    """
    if text is None or str(text).strip().lower() == "all":
        return list(available)
    try:
        wanted = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected 'all' or comma-separated fold numbers such as 1,3") from None
    missing = [k for k in wanted if k not in available]
    if missing:
        raise ValueError(f"{flag} {text!r}: no fold(s) {missing}; this protocol has folds {available}")
    return wanted


# Exit status of a command that stopped because the disk (or the quota) is full.
DISK_FULL_STATUS = 2


def disk_full_message(command: str, exc: BaseException, hint: str = "") -> str | None:
    """``"<command>: no space left on device while writing <path>[; <hint>]"`` when ``exc`` (or an exception
    it came from) is a write that failed for lack of disk space or quota (``utils.io.find_disk_full``);
    None for any other exception."""
    full = find_disk_full(exc)
    if full is None:
        return None
    if full.path:
        where = f"while writing {full.path}"
    else:  # the error names no file: its own first line says what failed
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = f"while writing (the error names no file: {type(exc).__name__}: {detail})"
    return f"{command}: {full.reason} {where}" + (f"; {hint}" if hint else "")


def _exits_in_one_line(command: str, message_of: Callable, status: int, what: str) -> Callable:
    """Decorator of a command's ``main(argv) -> int``: an exception for which ``message_of(exc)`` gives a
    message ends the command with that ONE error line and exit ``status`` instead of a traceback (logged
    at DEBUG level, ``-v``, as ``what``). Other exceptions pass through."""

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except Exception as exc:
                message = message_of(exc)
                if message is None:
                    raise
                log = logging.getLogger(f"emodarts_tf.{command}")
                log.error("%s", message)
                log.debug("%s:", what, exc_info=True)
                return status

        return run

    return decorate


def exits_on_full_disk(command: str, hint: str = "") -> Callable:
    """Decorator of a command's ``main(argv) -> int``: a write that fails because the disk or the quota is
    full (an OSError with errno ENOSPC or EDQUOT, TensorFlow's ``ResourceExhaustedError`` "No space left on
    device", or an error raised from one) ends the command with ONE error line from
    :func:`disk_full_message`, naming the file that could not be written, and exit status 2 instead of a
    traceback (logged at DEBUG level: ``-v``). ``hint`` says what to do next. Other exceptions pass through.
    """
    return _exits_in_one_line(command, lambda exc: disk_full_message(command, exc, hint), DISK_FULL_STATUS,
                              "the failed write's traceback")


# Exit status of a multi-worker command that stopped because another worker was lost.
LOST_WORKER_STATUS = 3


def exits_on_lost_worker(command: str, hint: str) -> Callable:
    """Decorator of a command's ``main(argv) -> int``: under ``multi_worker`` (MultiWorkerMirroredStrategy),
    the error a worker's loss raises in the others (a heartbeat timeout of TensorFlow's coordination
    service, an aborted collective) ends the command with ONE error line naming the lost worker (its task
    and address) and ending with ``hint``, how to continue (``utils.cluster.lost_worker_message``), and exit
    status 3 instead of a traceback (logged at DEBUG level: ``-v``). Other exceptions pass through."""

    def message_of(exc):
        from emodarts_tf.utils.cluster import lost_worker_message

        return lost_worker_message(exc, command, hint)

    return _exits_in_one_line(command, message_of, LOST_WORKER_STATUS, "the error's traceback")
