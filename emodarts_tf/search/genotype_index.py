"""``<out>/genotypes.json``: the selected genotype of every finished fold searched into ``<out>``, rebuilt
from the fold folders (no TensorFlow needed here).

The fold folders are the source of truth. Fold ``k`` is finished when ``fold<k>/search.json`` (written when
its search ends) records ``epochs_done >= epochs`` and names its selected genotype file (``genotype_file``),
whose meta, if it says how many epochs its search planned, agrees with ``search.json`` (a search resumed
with more epochs rewrites its genotypes before its ``search.json``: until it ends it is not finished). A
fold still running, killed, or extending its epochs is left out. An entry of the existing index whose
``fold<k>/`` folder does not exist at all (removed to save space, or an index copied on its own) is kept:
nothing on disk can replace it.

Several hosts may each search other folds into one shared ``--out``: :func:`rebuild_genotype_index`
rebuilds under ``utils.index_lock`` and re-checks after the write, so the last writer's index holds every
finished fold.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from emodarts_tf.search_space.genotype import Genotype
from emodarts_tf.utils.index_lock import LOCK_TIMEOUT_S, STALE_S, rebuild_index
from emodarts_tf.utils.io import read_json, write_json

log = logging.getLogger(__name__)

INDEX_FILE = "genotypes.json"
SEARCH_FILE = "search.json"
PT_FILE = "genotype_pt.json"  # search.select: perturbation
_GENOTYPE_FILES = ("genotype_best.json", "genotype.json", PT_FILE)
_FOLD_DIR = re.compile(r"fold(\d+)$")


def optional_int(value) -> int | None:
    """``value`` as an int (a JSON number or numeric string), None when it is none (or a bool)."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def finished_genotype(fold_dir: str | Path) -> dict | None:
    """The selected genotype (as its JSON dict) of the finished search in ``fold_dir``, or None when the
    search there is not finished (see the module docstring)."""
    fold_dir = Path(fold_dir)
    try:
        info = read_json(fold_dir / SEARCH_FILE)
    except ValueError:  # no search.json (running or killed), or unreadable
        return None
    if not isinstance(info, dict):
        return None
    done, epochs = optional_int(info.get("epochs_done")), optional_int(info.get("epochs"))
    name = info.get("genotype_file", "genotype_best.json")
    if done is None or epochs is None or done < epochs or name not in _GENOTYPE_FILES:
        return None
    try:
        genotype = Genotype.load(fold_dir / name)
    except ValueError as exc:
        log.warning("%s: a finished search whose selected genotype cannot be read (%s); left out of %s",
                    fold_dir, exc, INDEX_FILE)
        return None
    planned = optional_int((genotype.meta or {}).get("epochs"))
    if planned is not None and planned != epochs:
        return None  # resumed with another number of epochs, and still running
    return genotype.to_dict()


def scan_genotype_index(out_dir: str | Path) -> dict:
    """``{"<k>": genotype dict}`` of the finished folds of ``out_dir``, plus the entries of the existing index
    whose fold folder does not exist; sorted by fold."""
    out_dir = Path(out_dir)
    index = {}
    for child in out_dir.glob("fold*"):
        match = _FOLD_DIR.match(child.name)
        if match and child.is_dir():
            genotype = finished_genotype(child)
            if genotype is not None:
                index[str(int(match.group(1)))] = genotype
    existing = read_genotype_index(out_dir) or {}
    for key, value in existing.items():
        if key not in index and not (out_dir / f"fold{key}").is_dir():
            index[key] = value
    return dict(sorted(index.items(), key=lambda kv: (0, int(kv[0])) if kv[0].isdigit() else (1, kv[0])))


def read_genotype_index(out_dir: str | Path) -> dict | None:
    """The index on disk (None when there is none, or it is not a JSON object)."""
    path = Path(out_dir) / INDEX_FILE
    if not path.is_file():
        return None
    try:
        index = read_json(path)
    except ValueError as exc:
        log.warning("%s: %s; it is rebuilt from the fold folders", path, exc)
        return None
    return index if isinstance(index, dict) else None


def rebuild_genotype_index(out_dir: str | Path, timeout_s: float | None = LOCK_TIMEOUT_S,
                           stale_s: float = STALE_S) -> dict:
    """Rebuild ``<out_dir>/genotypes.json`` from the finished folds (locked, atomic, re-checked); returns it."""
    out_dir = Path(out_dir)

    def write():
        index = scan_genotype_index(out_dir)
        if read_genotype_index(out_dir) != index:
            write_json(out_dir / INDEX_FILE, index)
        return index

    return rebuild_index(out_dir, write, lambda: scan_genotype_index(out_dir), lambda: read_genotype_index(out_dir),
                         what=INDEX_FILE, timeout_s=timeout_s, stale_s=stale_s)
