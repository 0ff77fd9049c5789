"""Which genotype trains which fold, and the refusal of genotypes whose search saw a fold's test speakers.

``cli/train.py --genotype`` takes:

- **one genotype file** (``genotype.json``, ``genotype_best.json``, a paper genotype typed in as JSON):
  the same architecture for every fold;
- **a search output directory** (``cli/search.py --out <dir>``): one genotype per fold, looked up for
  fold ``k`` in this order:

  1. ``<dir>/fold<k>/genotype_best.json``: the genotype of the search epoch with the best validation UA
     (the best-validation genotype; ``choice="final"`` prefers ``genotype.json`` instead),
  2. ``<dir>/fold<k>/genotype.json``: the genotype at the end of the search (``choice="perturbation"``, or a
     search with ``search.select: perturbation`` under ``choice="search"``, prefers ``genotype_pt.json``, the
     DARTS-PT genotype, before both),
  3. ``<dir>/genotypes.json``: ``{"<k>": genotype}`` as ``--fold all`` writes it,
  4. ``<dir>/genotype_best.json`` / ``<dir>/genotype.json``: a single fold's search directory, used for
     every fold (and then refused for the folds whose test speakers it saw).

Leak rule: the genotype used for fold ``k`` must come from a search on fold ``k``'s training part only.
A genotype is refused for fold ``k`` when its ``meta`` (written by the search) shows that the search
saw one of fold ``k``'s test speakers (``train_speakers``/``val_speakers``), or that it ran
on another fold ``j != k`` of the same corpus and protocol (whose training part holds fold ``k``'s test
speakers). ``allow_leak=True`` turns the refusal into a warning. A genotype without search meta (typed
in from a paper) is accepted with a warning; a genotype searched on another corpus is accepted. A random
genotype (``meta.source == "random"``, ``search_space.random_genotype``; no search meta) saw no data at
all and is accepted silently.

Unfinished searches: a search killed part-way leaves ``genotype.json`` / ``genotype_best.json`` of its
last finished epoch but no ``search.json`` (written when the search ends), or a ``search.json`` whose
``epochs_done`` is below its ``epochs``. Such a genotype is refused with the fold directory and the epochs
done of the epochs planned (:func:`unfinished_search`), unless ``allow_unfinished=True``
(``cli/train.py --allow-unfinished``): then it is accepted with a warning, and
:attr:`GenotypeChoice.unfinished` holds ``{"unfinished_search": True, ...}`` for the fold's records.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from emodarts_tf.search.genotype_index import PT_FILE, optional_int
from emodarts_tf.search_space.genotype import Genotype
from emodarts_tf.search_space.random_genotype import SOURCE as RANDOM_SOURCE
from emodarts_tf.utils.io import read_json

log = logging.getLogger(__name__)

BEST_FILE = "genotype_best.json"
FINAL_FILE = "genotype.json"
ALL_FILE = "genotypes.json"
SEARCH_FILE = "search.json"
_SPEAKER_KEYS = ("train_speakers", "val_speakers")  # the speakers a search's genotype meta says it saw


class GenotypeLeakError(ValueError):
    """The genotype's search saw the test speakers of the fold it would train."""


class UnfinishedSearchError(ValueError):
    """The genotype comes from a search that stopped before its last epoch."""


@dataclass
class GenotypeChoice:
    """The genotype for one fold, where it came from, and what the search cost (when known)."""

    fold: int
    genotype: Genotype
    source: str
    search_seconds: float | None = None
    search_key: str | None = None  # the file the seconds came from (several folds may share one)
    note: str | None = None  # why it was accepted despite a warning (no meta, --allow-leak, ...)
    # With --allow-unfinished, for a search that stopped early: {"unfinished_search": True,
    # "search_epochs_done", "search_epochs", "search_dir"} (recorded in model_info.json and the summary).
    unfinished: dict | None = None


def _search_seconds(genotype_path: Path) -> tuple[float | None, str | None]:
    """Wall-clock seconds of the search that made this genotype (``seconds`` of the ``search.json`` beside
    it) and the file they came from, so that folds sharing one search count it once."""
    path = genotype_path.parent / SEARCH_FILE
    if not path.is_file():
        return None, None
    try:
        info = read_json(path)
    except ValueError:
        return None, None
    if isinstance(info, dict) and isinstance(info.get("seconds"), (int, float)):
        return float(info["seconds"]), str(path)
    return None, None


def _seen_speakers(meta: dict) -> set:
    seen = set()
    for key in _SPEAKER_KEYS:
        value = meta.get(key)
        if isinstance(value, (list, tuple)):
            seen.update(str(s) for s in value)
    return seen


def leak_reason(genotype: Genotype, fold, corpus: str, protocol: str, source: str = "genotype") -> str | None:
    """Why ``genotype`` must not train ``fold`` (a ``data.records.Fold``), or None when it may.

    Raises nothing; :func:`check_genotype_for_fold` turns the reason into an error or a warning.
    """
    meta = genotype.meta or {}
    meta_corpus = meta.get("corpus")
    if meta_corpus and corpus and str(meta_corpus) != str(corpus):
        return None  # searched on another corpus: its speakers are not this corpus's
    test = {str(s) for s in fold.test_speakers}
    overlap = sorted(_seen_speakers(meta) & test)
    if overlap:
        return (
            f"{source} was searched on data of speaker(s) {overlap}, which are test speakers of fold "
            f"{fold.index} (test speakers {sorted(test)}): the architecture was chosen with the test data"
        )
    meta_fold = meta.get("fold")
    meta_protocol = meta.get("protocol")
    same_protocol = meta_protocol is None or not protocol or str(meta_protocol) == str(protocol)
    if meta_fold is not None and same_protocol:
        try:
            meta_fold_int = int(meta_fold)
        except (TypeError, ValueError):
            meta_fold_int = None
        if meta_fold_int is not None and meta_fold_int != int(fold.index):
            return (
                f"{source} was searched on fold {meta_fold_int} of {meta_corpus or corpus}/{meta_protocol or protocol}, "
                f"whose training part holds fold {fold.index}'s test speakers {sorted(test)}"
            )
    return None


def has_search_meta(genotype: Genotype) -> bool:
    meta = genotype.meta or {}
    return meta.get("fold") is not None or bool(_seen_speakers(meta))


def is_random_genotype(genotype: Genotype) -> bool:
    """A genotype drawn by ``search_space.random_genotype`` (no search, so no data chose it): its meta
    says ``source: random`` and holds no search meta (a fold or speakers would be checked as usual)."""
    meta = genotype.meta or {}
    return meta.get("source") == RANDOM_SOURCE and not has_search_meta(genotype)


def _epoch_files_done(search_dir: Path) -> int:
    """The last epoch whose genotype the search wrote (``genotypes/epoch_<e>.json``), 0 if none."""
    done = 0
    for path in search_dir.glob("genotypes/epoch_*.json"):
        epoch = optional_int(path.stem[len("epoch_"):])
        if epoch is not None:
            done = max(done, epoch)
    return done


def unfinished_search(genotype: Genotype, search_dir: Path | None) -> dict | None:
    """``{"search_dir", "epochs_done", "epochs", "why"}`` when ``genotype`` comes from a search that did not
    run all its epochs, else None.

    ``search_dir`` is the folder the genotype was found in (a search's ``fold<k>/``), or None. Evidence, in
    this order:

    1. ``search_dir/search.json`` (the search writes it only when it ends): unfinished when its
       ``epochs_done`` is below its ``epochs`` (or below the genotype meta's ``epochs``, a resumption with
       more epochs);
    2. without it, in a folder the search wrote (``checkpoints/``, ``alpha_history.json`` or
       ``genotypes/``): unfinished when the last epoch written (``genotypes/epoch_<e>.json``, or the
       genotype meta's ``epoch``) is below the meta's ``epochs``;
    3. a genotype file on its own: unfinished when its meta says it is the final genotype
       (``"selected": "final"``) of an epoch below ``epochs``. A best genotype's ``epoch`` is the epoch
       with the best validation UA, which may be any epoch of a finished search, so it proves nothing.

    Genotypes whose meta has no ``epochs`` (typed in, random, older searches) are never called unfinished.
    """
    meta = genotype.meta or {}
    planned = optional_int(meta.get("epochs"))
    epoch = optional_int(meta.get("epoch"))
    if search_dir is not None and (search_dir / "search.json").is_file():
        try:
            info = read_json(search_dir / "search.json")
        except ValueError:
            info = None
        if isinstance(info, dict) and optional_int(info.get("epochs_done")) is not None:
            done = optional_int(info.get("epochs_done"))
            total = max(x for x in (optional_int(info.get("epochs")), planned, 0) if x is not None)
            if done < total:
                return {"search_dir": str(search_dir), "epochs_done": done, "epochs": total,
                        "why": "search.json records fewer epochs done than planned"}  # fmt: skip
            return None
    if planned is None:
        return None
    wrote = search_dir is not None and any(
        (search_dir / name).exists() for name in ("checkpoints", "alpha_history.json", "genotypes")
    )
    if wrote:
        done = max(_epoch_files_done(search_dir), epoch or 0)
        if done < planned:
            return {"search_dir": str(search_dir), "epochs_done": done, "epochs": planned,
                    "why": "no search.json: the search did not reach its end"}  # fmt: skip
        return None
    if meta.get("selected") == "final" and epoch is not None and epoch < planned:
        where = str(search_dir) if search_dir is not None else "?"
        return {"search_dir": where, "epochs_done": epoch, "epochs": planned,
                "why": "its meta is the final genotype of an epoch before the last"}  # fmt: skip
    return None


def check_search_finished(
    genotype: Genotype, search_dir: Path | None, fold_index: int, source: str, allow_unfinished: bool = False
) -> dict | None:
    """Raise :class:`UnfinishedSearchError` when ``genotype``'s search stopped before its last epoch (unless
    ``allow_unfinished``: then log a warning and return what to record for the fold); None when finished."""
    found = unfinished_search(genotype, search_dir)
    if found is None:
        return None
    reason = (
        f"{source} comes from an unfinished search: {found['search_dir']} ran {found['epochs_done']} of "
        f"{found['epochs']} epochs ({found['why']})"
    )
    if not allow_unfinished:
        raise UnfinishedSearchError(
            f"refusing to train fold {fold_index}: {reason}. Finish the search (cli/search.py with the same "
            "--out and --resume), or pass --allow-unfinished to train this genotype anyway."
        )
    log.warning("UNFINISHED SEARCH ALLOWED (--allow-unfinished) for fold %d: %s", fold_index, reason)
    return {"unfinished_search": True, "search_epochs_done": found["epochs_done"],
            "search_epochs": found["epochs"], "search_dir": found["search_dir"]}  # fmt: skip


def check_genotype_for_fold(
    genotype: Genotype, fold, corpus: str, protocol: str, source: str, allow_leak: bool = False
) -> str | None:
    """Raise :class:`GenotypeLeakError` if the genotype's search saw fold's test speakers (unless
    ``allow_leak``); returns a note when it is accepted with a warning."""
    if is_random_genotype(genotype):
        return None  # drawn at random: no data, so no test speaker, chose it
    if not has_search_meta(genotype):
        note = (
            f"{source} has no search meta (no fold or speakers): accepted for fold {fold.index} as a "
            "hand-written genotype; nothing shows which speakers chose it"
        )
        log.warning(note)
        return note
    reason = leak_reason(genotype, fold, corpus, protocol, source)
    if reason is None:
        return None
    if allow_leak:
        note = f"LEAK ALLOWED (--allow-leak): {reason}"
        log.warning(note)
        return note
    raise GenotypeLeakError(
        f"refusing to train fold {fold.index}: {reason}. Use the genotype searched on fold {fold.index} "
        f"(cli/search.py --fold {fold.index}, or --fold all and pass its output directory), or pass "
        "--allow-leak to train it anyway (its scores are then not speaker-independent)."
    )


def search_choice(search_dir: Path, choice: str) -> str:
    """``choice`` itself, or for ``"search"`` the selection the search made (``search.select`` in the
    ``search.json`` of ``search_dir``; ``"best"`` when it does not say)."""
    if choice != "search":
        return choice
    path = search_dir / "search.json"
    try:
        selected = read_json(path).get("select") if path.is_file() else None
    except (ValueError, AttributeError):
        selected = None
    return selected if selected in ("best", "final", "perturbation") else "best"


def _file_order(choice: str) -> tuple:
    """The genotype files of a search fold folder, most preferred first, for ``choice``."""
    if choice == "perturbation":
        return (PT_FILE, FINAL_FILE, BEST_FILE)
    return (BEST_FILE, FINAL_FILE) if choice == "best" else (FINAL_FILE, BEST_FILE)


def _fold_file(directory: Path, k: int, choice: str) -> Path | None:
    for name in _file_order(search_choice(directory / f"fold{k}", choice)):
        path = directory / f"fold{k}" / name
        if path.is_file():
            return path
    return None


def _available_folds(directory: Path) -> list[int]:
    found = set()
    for child in directory.glob("fold*"):
        if child.is_dir() and child.name[4:].isdigit() and ((child / BEST_FILE).is_file() or (child / FINAL_FILE).is_file()):
            found.add(int(child.name[4:]))
    if (directory / ALL_FILE).is_file():
        try:
            found.update(int(k) for k in read_json(directory / ALL_FILE))
        except (ValueError, TypeError):
            pass
    return sorted(found)


def genotypes_for_folds(
    spec: str | Path,
    folds: list,
    corpus: str,
    protocol: str,
    allow_leak: bool = False,
    choice: str = "best",
    allow_unfinished: bool = False,
) -> dict[int, GenotypeChoice]:
    """The checked genotype for each of ``folds`` (``data.records.Fold`` objects) from ``spec``.

    Args:
        spec: a genotype JSON file or a search output directory (see the module docstring).
        folds: the folds to train.
        corpus, protocol: of the data being trained (compared with the genotypes' meta).
        allow_leak: accept, with a warning, genotypes whose search saw a fold's test speakers.
        choice: ``"best"`` (by validation UA during the search), ``"final"`` (the last epoch's), or
            ``"search"``: what each fold's search selected (its ``search.select``).
        allow_unfinished: accept, with a warning, genotypes of searches that stopped before their last
            epoch (recorded in :attr:`GenotypeChoice.unfinished`).

    Raises:
        ValueError: no such file, no genotype for a fold, an invalid genotype (unknown op, wrong node
            index: the message names the cell, node and edge), a leak (:class:`GenotypeLeakError`), or a
            genotype of an unfinished search (:class:`UnfinishedSearchError`).
    """
    if choice not in ("search", "best", "final", "perturbation"):
        raise ValueError(f"choice: expected 'search', 'best', 'final' or 'perturbation', received {choice!r}")
    spec = Path(spec).expanduser()
    if not spec.exists():
        raise ValueError(f"--genotype {spec}: no such file or directory")
    chosen: dict[int, GenotypeChoice] = {}
    cache: dict[str, Genotype] = {}

    def load(path: Path) -> Genotype:
        key = str(path)
        if key not in cache:
            cache[key] = Genotype.load(path)
        return cache[key]

    for fold in folds:
        k = int(fold.index)
        if spec.is_file():
            path, genotype = spec, load(spec)
            source = str(spec)
            search_dir = spec.parent  # a search's fold<k>/ when the file was passed from there
        else:
            path = _fold_file(spec, k, choice)
            if path is not None:
                genotype, source = load(path), str(path)
                search_dir = path.parent
            elif (spec / ALL_FILE).is_file():
                table = read_json(spec / ALL_FILE)
                if not isinstance(table, dict):
                    raise ValueError(f"{spec / ALL_FILE}: expected an object {{\"<fold>\": genotype}}")
                if str(k) not in table:
                    raise ValueError(
                        f"--genotype {spec}: no genotype for fold {k} (it has folds {_available_folds(spec)}); "
                        f"run cli/search.py --fold {k} or train only those folds with --folds"
                    )
                source = f"{spec / ALL_FILE}[{k}]"
                genotype = Genotype.from_dict(table[str(k)], source=source)
                path = spec / ALL_FILE
                # The search writes genotypes.json entries for finished folds only; its fold folder, if
                # kept, is still the evidence of how far the search ran.
                search_dir = spec / f"fold{k}" if (spec / f"fold{k}").is_dir() else None
            else:
                order = _file_order(search_choice(spec, choice))
                single = next((spec / n for n in order if (spec / n).is_file()), None)
                if single is None:
                    available = _available_folds(spec)
                    if available:
                        raise ValueError(
                            f"--genotype {spec}: no genotype for fold {k} (it has folds {available}); "
                            f"run cli/search.py --fold {k} or train only those folds with --folds"
                        )
                    raise ValueError(
                        f"--genotype {spec}: neither a genotype file nor a search output directory "
                        f"(expected fold<k>/{BEST_FILE}, fold<k>/{FINAL_FILE}, {ALL_FILE} or {BEST_FILE})"
                    )
                path, genotype, source = single, load(single), str(single)
                search_dir = spec
        note = check_genotype_for_fold(genotype, fold, corpus, protocol, source, allow_leak=allow_leak)
        unfinished = check_search_finished(genotype, search_dir, k, source, allow_unfinished=allow_unfinished)
        if unfinished is not None:
            allowed = (f"UNFINISHED SEARCH ALLOWED (--allow-unfinished): {unfinished['search_dir']} ran "
                       f"{unfinished['search_epochs_done']} of {unfinished['search_epochs']} epochs")  # fmt: skip
            note = f"{note}; {allowed}" if note else allowed
        seconds, key = _search_seconds(Path(path))
        chosen[k] = GenotypeChoice(
            fold=k, genotype=genotype, source=source, search_seconds=seconds, search_key=key, note=note,
            unfinished=unfinished,
        )
    return chosen


def spec_is_two_stream(spec: str | Path) -> bool:
    """Whether the genotypes of ``spec`` (a genotype file, a ``genotypes.json`` index or a search folder) are
    two-stream (EmotionNAS, genotype v2 with ``streams``): the train command prepares the frame-level stream
    for them. A spec that cannot be read answers False and is reported by :func:`genotypes_for_folds`."""
    from emodarts_tf.search_space.genotype import is_two_stream

    path = Path(spec)
    candidates = []
    if path.is_dir():
        candidates = [path / ALL_FILE] + [_fold_file(path, k, "best") for k in _available_folds(path)]
    elif path.is_file():
        candidates = [path]
    for candidate in candidates:
        if candidate is None or not candidate.is_file():
            continue
        try:
            data = read_json(candidate)
        except ValueError:
            continue
        entries = [data] if isinstance(data, dict) and "format" in data else (
            list(data.values()) if isinstance(data, dict) else [])
        if any(isinstance(entry, dict) and is_two_stream(entry) for entry in entries):
            return True
    return False
