"""Arguments shared by every command (``cli/*.py``), and their mapping onto the typed config."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from emodarts_tf.config import ExperimentConfig, load_config
from emodarts_tf.utils.logs import setup_logging

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
    parser.add_argument("--encoding", help="text encoding of a csv manifest (default: utf-8; e.g. latin-1)")
    parser.add_argument("--seed", type=int, help="random seed (default: the config's)")
    parser.add_argument("-v", "--verbose", action="count", default=0)


def config_from_args(args: argparse.Namespace, epochs_key: str | None = None) -> ExperimentConfig:
    """Build the config: file, then the dedicated flags, then ``--set`` overrides (last wins)."""
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
        raise SystemExit(f"--data {config.data.corpus} needs --root (the corpus folder, or the CSV manifest for csv)")
    logging.getLogger(__name__).debug("config: %s", config)
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
