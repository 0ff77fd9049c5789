"""Speaker-independent fold protocols, as data.

- ``loso``: leave one speaker out (one fold per speaker, sorted by speaker id).
- ``loso-session``: leave one session out (one fold per session).
- ``emodarts``: the emoDARTS paper's IEMOCAP folds; fold k holds out the speaker pair
  1: Ses01_M+Ses02_F, 2: Ses02_M+Ses03_F, 3: Ses03_M+Ses04_F, 4: Ses04_M+Ses05_F, 5: Ses05_M+Ses01_F.
- ``emodb5``: EmoDB, five folds of one male and one female speaker: (03,08), (10,09), (11,13), (12,14), (15,16).
- ``official``: one fold from the records' official split (MSP-Podcast ``Split_Set``): train = ``Train``
  plus ``Development`` (``Validation`` in older releases), test = ``Test1`` (or ``Test``). The
  Development part stays inside the fold's training part and :func:`validation_speakers` returns its
  speakers, so that the validation set is the official one. A speaker found in both training and test
  parts is removed from training (logged), so the fold stays speaker-independent.

Every fold is checked: no speaker is on both sides.
"""
from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict

from emodarts_tf.data.records import Fold, Record

log = logging.getLogger(__name__)

EMODARTS_FOLDS = (
    ("Ses01_M", "Ses02_F"),
    ("Ses02_M", "Ses03_F"),
    ("Ses03_M", "Ses04_F"),
    ("Ses04_M", "Ses05_F"),
    ("Ses05_M", "Ses01_F"),
)
EMODB5_FOLDS = (("03", "08"), ("10", "09"), ("11", "13"), ("12", "14"), ("15", "16"))

OFFICIAL_TRAIN = ("train",)
OFFICIAL_VALIDATION = ("development", "validation", "dev", "val")
OFFICIAL_TEST = ("test1", "test")
OFFICIAL_OTHER_TESTS = ("test2", "test3")  # MSP-Podcast's further test sets, left out of the fold
# Every fold lists all its utterances' paths (folds.json, written by every command), so folds x utterances bounds
# what a protocol may build: 20 M paths make a folds.json of about 1.5 GB. CREMA-D's 91-speaker LOSO lists 0.7 M;
# LOSO over MSP-Podcast's ~1,400 speakers would list about 200 M (and mean as many trainings).
MAX_FOLD_PATHS = 20_000_000


def _fold(index: int, name: str, records: list, test_speakers) -> Fold:
    test_set = set(test_speakers)
    train = [r for r in records if r.speaker not in test_set]
    test = [r for r in records if r.speaker in test_set]
    return Fold(
        index=index,
        name=name,
        train_speakers=sorted({r.speaker for r in train}),
        test_speakers=sorted({r.speaker for r in test}),
        train=[r.path for r in train],
        test=[r.path for r in test],
    )


def _held_out_groups(records: list, protocol: str, corpus: str) -> list:
    """``[(name, test speakers)]`` for the protocols that hold out speaker groups."""
    speakers = sorted({r.speaker for r in records})
    if protocol == "loso":
        return [(f"loso-{s}", [s]) for s in speakers]
    if protocol == "loso-session":
        without = [r.path for r in records if not r.session]
        if without:
            raise ValueError(
                f"protocol loso-session: corpus {corpus!r} has {len(without)} record(s) without a session "
                f"(e.g. {without[0]}); a CSV manifest gives it in a `session` column"
            )
        by_session = defaultdict(set)
        sessions_of = defaultdict(set)
        for r in records:
            by_session[r.session].add(r.speaker)
            sessions_of[r.speaker].add(r.session)
        several = sorted(s for s, found in sessions_of.items() if len(found) > 1)
        if several:
            log.warning(
                "protocol loso-session: %d speaker(s) recorded in several sessions (%s); each session's fold "
                "tests all their utterances, so these are tested in more than one fold",
                len(several), ", ".join(several[:10]),
            )  # fmt: skip
        groups = []
        for session in sorted(by_session):
            held = sorted(by_session[session])
            # A speaker recorded in several sessions would otherwise sit on both sides.
            groups.append((f"session-{session}", held))
        return groups
    if protocol == "emodarts":
        if corpus != "iemocap":
            raise ValueError(f"protocol emodarts is IEMOCAP's; corpus {corpus!r} has no such speakers")
        return [(f"emodarts-{k}-{m}+{f}", [m, f]) for k, (m, f) in enumerate(EMODARTS_FOLDS, 1)]
    if protocol == "emodb5":
        if corpus != "emodb":
            raise ValueError(f"protocol emodb5 is EmoDB's; corpus {corpus!r} has no such speakers")
        return [(f"emodb5-{k}-{m}+{f}", [m, f]) for k, (m, f) in enumerate(EMODB5_FOLDS, 1)]
    raise ValueError(
        f"data.protocol: unknown protocol {protocol!r}; expected loso, loso-session, emodarts, emodb5 or official"
    )


def _in_split(r: Record, names) -> bool:
    """Whether the record's official split is one of ``names`` (lower case), in any case and spacing."""
    return r.split.strip().lower() in names


def _official_fold(records: list) -> Fold:
    test = [r for r in records if _in_split(r, OFFICIAL_TEST)]
    train = [r for r in records if _in_split(r, OFFICIAL_TRAIN) or _in_split(r, OFFICIAL_VALIDATION)]
    accepted = (f"training {list(OFFICIAL_TRAIN)}, validation {list(OFFICIAL_VALIDATION)}, test "
                f"{list(OFFICIAL_TEST)}, in any case")
    if not test or not any(_in_split(r, OFFICIAL_TRAIN) for r in train):
        splits = sorted({r.split for r in records})
        raise ValueError(
            f"protocol official: expected records with split Train and Test1 (Development optional), found {splits} "
            f"(accepted: {accepted})"
        )
    outside = [r for r in records if not _in_split(r, OFFICIAL_TEST + OFFICIAL_TRAIN + OFFICIAL_VALIDATION)]
    for level, what, other_test in ((logging.INFO, "MSP-Podcast's other test sets", True),
                                    (logging.WARNING, "a split in no part of the fold", False)):
        counts = Counter(r.split for r in outside if _in_split(r, OFFICIAL_OTHER_TESTS) == other_test)
        if counts:
            log.log(level, "protocol official: %d record(s) left out, %s: %s (accepted: %s)", sum(counts.values()),
                    what, ", ".join(f"{s!r}: {n}" for s, n in sorted(counts.items())), accepted)
    shared = {r.speaker for r in train} & {r.speaker for r in test}
    if shared:
        log.warning(
            "protocol official: %d speaker(s) appear in training and test splits (%s); their training "
            "utterances are left out to keep the fold speaker-independent",
            len(shared), sorted(shared)[:10],
        )
        train = [r for r in train if r.speaker not in shared]
    return Fold(
        index=1,
        name="official-Train+Development/Test1",
        train_speakers=sorted({r.speaker for r in train}),
        test_speakers=sorted({r.speaker for r in test}),
        train=[r.path for r in train],
        test=[r.path for r in test],
    )


def check_speaker_independent(fold: Fold, records: list) -> None:
    """``ValueError`` when a speaker of the fold's test part also appears in its training part."""
    speaker_of = {r.path: r.speaker for r in records}
    train = {speaker_of[p] for p in fold.train}
    test = {speaker_of[p] for p in fold.test}
    shared = train & test
    if shared:
        raise ValueError(f"fold {fold.index} ({fold.name}): speakers {sorted(shared)} in both train and test")


def _check_fold_paths(n_folds: int, n_records: int, protocol: str, corpus: str) -> None:
    if n_folds * n_records <= MAX_FOLD_PATHS:
        return
    advice = {
        "msp-podcast": "use protocol official (its Split_Set)",
        "csv": "use loso-session (a `session` column grouping speakers) or official (a `split` column: "
               "Train/Development/Test1)",
    }.get(corpus, "use loso-session")
    raise ValueError(
        f"protocol {protocol} on corpus {corpus!r}: {n_folds:,} folds of {n_records:,} utterances each would list "
        f"{n_folds * n_records:,} paths (more than {MAX_FOLD_PATHS:,}), one training run per fold; for a corpus of "
        f"this size {advice}"
    )


def check_protocol_size(records: list, protocol: str, corpus: str) -> None:
    """Refuse a protocol whose folds would list more than ``MAX_FOLD_PATHS`` paths in all, from the records as read
    (before extraction; files that fail later only make the folds smaller).

    Raises:
        ValueError: naming the protocol, corpus, fold count and what to use instead.
    """
    if protocol != "official" and records:
        _check_fold_paths(len(_held_out_groups(records, protocol, corpus)), len(records), protocol, corpus)


def make_folds(records: list, protocol: str, corpus: str) -> list:
    """Speaker-independent folds of ``records`` (already selected) under ``protocol``.

    Folds whose held-out speakers have no records are left out (logged), keeping the protocol's fold
    numbers, so fold 3 of ``emodarts`` is always Ses03_M+Ses04_F.

    Raises:
        ValueError: unknown protocol, one that does not apply to ``corpus``, no usable fold, or more than
            ``MAX_FOLD_PATHS`` paths in all folds together (LOSO over a corpus of a thousand speakers).
    """
    records = list(records)
    if not records:
        raise ValueError("make_folds: no records")
    if protocol == "official":
        folds = [_official_fold(records)]
    else:
        groups = _held_out_groups(records, protocol, corpus)
        _check_fold_paths(len(groups), len(records), protocol, corpus)
        folds = []
        for index, (name, held) in enumerate(groups, 1):
            fold = _fold(index, name, records, held)
            if not fold.test:
                log.warning("protocol %s: fold %d (%s) has no test utterances; left out", protocol, index, name)
                continue
            if not fold.train:
                log.warning("protocol %s: fold %d (%s) has no training utterances; left out", protocol, index, name)
                continue
            folds.append(fold)
    if not folds:
        raise ValueError(f"protocol {protocol!r}: no fold has both training and test utterances")
    for fold in folds:
        check_speaker_independent(fold, records)
    return folds


def official_validation_speakers(fold: Fold, records: list) -> list:
    """Speakers of the fold's training part whose records carry an official validation split."""
    train = set(fold.train)
    return sorted(
        {r.speaker for r in records if r.path in train and _in_split(r, OFFICIAL_VALIDATION)}
    )


def validation_speakers(fold: Fold, records: list, val_fraction: float, seed: int) -> list:
    """Speakers held out from the fold's training part for validation (speaker-independent).

    When the training part carries an official validation split (MSP-Podcast ``Development``), its
    speakers are returned (a speaker found in both Train and Development then validates with all of
    its utterances, so training stays speaker-disjoint from validation; logged). Otherwise
    ``max(1, round(val_fraction * n))`` of the ``n`` training speakers are drawn with ``seed``, alternating
    genders when genders are known (``Record.gender``), and at least one speaker is left for training. A drawn
    speaker is passed over (logged) when taking it would leave a class of the training part without a training
    speaker (a class that only it and validation speakers speak); the draw is the same as without this rule
    wherever no class is at stake.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1), fewer than two training speakers, every training speaker
            the last one of some class, or an official validation split that takes every training speaker.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction: expected a share in [0, 1), received {val_fraction!r}")
    official = official_validation_speakers(fold, records)
    if official:
        return _checked_official(fold, records, official)
    train = set(fold.train)
    gender_of = {}
    classes_of, speakers_of = defaultdict(set), defaultdict(set)
    for r in records:
        if r.path in train:
            gender_of.setdefault(r.speaker, r.gender)
            classes_of[r.speaker].add(r.label)
            speakers_of[r.label].add(r.speaker)
    speakers = sorted(gender_of)
    if len(speakers) < 2:
        raise ValueError(
            f"fold {fold.index} ({fold.name}): {len(speakers)} training speaker(s); validation needs one "
            "speaker held out and at least one left for training"
        )
    n_val = min(len(speakers) - 1, max(1, int(round(val_fraction * len(speakers)))))
    rng = random.Random(f"{seed}-{fold.index}-{fold.name}")
    by_gender = defaultdict(list)
    for s in speakers:
        by_gender[gender_of[s] or "?"].append(s)
    for group in by_gender.values():
        rng.shuffle(group)
    # Round-robin over genders (the larger groups first, ties in random order), one speaker at a time.
    order = sorted(by_gender, key=lambda g: (-len(by_gender[g]), rng.random()))
    drawn: list = []
    while len(drawn) < len(speakers):
        for g in order:
            if by_gender[g]:
                drawn.append(by_gender[g].pop())
    # Take the draw in its order; pass over a speaker who is the last training speaker of a class.
    chosen: list = []
    passed: list = []
    for s in drawn:
        if len(chosen) == n_val:
            break
        lost = sorted(c for c in classes_of[s] if speakers_of[c] <= set(chosen) | {s})
        if lost:
            passed.append((s, lost))
            continue
        chosen.append(s)
    if passed:
        log.warning(
            "fold %d (%s): validation passed over speaker(s) %s, each the last training speaker of a class; "
            "%d validation speaker(s) of %d wanted",
            fold.index, fold.name, ", ".join(f"{s} ({'/'.join(c)})" for s, c in passed), len(chosen), n_val,
        )  # fmt: skip
    if not chosen:
        raise ValueError(
            f"fold {fold.index} ({fold.name}): every training speaker is the last one of some class "
            f"({', '.join(f'{s}: {c}' for s, c in passed)}); no speaker can validate without leaving a class "
            "out of training (add speakers, or data.classes without these classes)"
        )
    return sorted(chosen)


def _checked_official(fold: Fold, records: list, official: list) -> list:
    """The official validation speakers, with what they take from training reported; ``ValueError`` when they
    take every training speaker (a split column that splits utterances, not speakers)."""
    train = set(fold.train)
    val = set(official)
    mixed = Counter(r.speaker for r in records if r.path in train and r.speaker in val
                    and not _in_split(r, OFFICIAL_VALIDATION))
    left = {r.speaker for r in records if r.path in train} - val
    if not left:
        raise ValueError(
            f"fold {fold.index} ({fold.name}): every training speaker has records in a validation split "
            f"({list(OFFICIAL_VALIDATION)}), so none is left to train; validation is speaker-independent and takes "
            "all of a speaker's utterances. The split column must split speakers, not utterances"
        )
    if mixed:
        log.warning(
            "fold %d (%s): %d speaker(s) have records in both a training and a validation split (%s); they validate "
            "with all %d of their training-split utterances too (a split column must split speakers, not utterances)",
            fold.index, fold.name, len(mixed), ", ".join(sorted(mixed)[:10]), sum(mixed.values()),
        )  # fmt: skip
    return official
