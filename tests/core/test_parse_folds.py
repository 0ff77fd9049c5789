"""Fold selection on the command line: errors name the flag the user typed and are ValueErrors, which every
command reports in one line with exit status 2."""
import pytest

from emodarts_tf.commands.common import parse_folds


def test_parse_folds_selects_and_refuses_by_flag():
    assert parse_folds("all", [1, 2, 3]) == [1, 2, 3]
    assert parse_folds(None, [1, 2]) == [1, 2]
    assert parse_folds("1,3", [1, 2, 3]) == [1, 3]
    with pytest.raises(ValueError, match=r"^--fold '9': no fold\(s\) \[9\]; this protocol has folds \[1, 2\]"):
        parse_folds("9", [1, 2], flag="--fold")
    with pytest.raises(ValueError, match=r"^--folds 'x': expected 'all'"):
        parse_folds("x", [1, 2])


def test_search_with_a_missing_fold_exits_2_naming_fold(tmp_path, caplog):
    from emodarts_tf.commands.search import main

    code = main(["--data", "demo", "--cache", str(tmp_path / "cache"), "--fold", "9", "--out", str(tmp_path / "s"),
                 "--set", "data.workers=1"])  # fmt: skip
    assert code == 2
    assert "--fold '9': no fold(s) [9]" in caplog.text
