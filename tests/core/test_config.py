"""Typed configs: YAML layering, dotted overrides, and clear errors for bad keys and values."""
import pytest

from emodarts_tf.config import ExperimentConfig, load_config, parse_override, parse_variant, save_config


def test_defaults_are_the_paper_settings():
    c = ExperimentConfig()
    assert (c.features.sample_rate, c.features.duration_s, c.features.n_mfcc, c.features.time_pool) == (32750, 8.0, 128, 4)
    assert (c.space.init_channels, c.space.cnn_cells, c.space.seq_cells, c.space.cnn_nodes) == (8, 4, 4, 4)
    s = c.search
    assert (s.epochs, s.batch_size, s.w_lr, s.w_lr_min, s.w_momentum) == (50, 64, 0.025, 0.001, 0.9)
    assert (s.w_weight_decay, s.grad_clip, s.alpha_lr, s.alpha_beta1, s.alpha_beta2, s.alpha_weight_decay) == (
        3e-4, 5.0, 3e-4, 0.5, 0.999, 1e-3)


def test_paper_yaml_equals_defaults_where_it_speaks():
    paper = load_config("paper.yaml")
    defaults = ExperimentConfig()
    assert paper.features == defaults.features
    assert paper.search.alpha_lr == defaults.search.alpha_lr


def test_demo_extends_paper_and_overrides_win(tmp_path):
    c = load_config("demo", ["search.epochs=2", "space.seq_ops=[lstm_1, none]", "features.fmax=8000"])
    assert c.data.corpus == "demo"
    assert c.search.epochs == 2
    assert c.search.alpha_lr == 3e-4  # inherited from paper.yaml
    assert c.space.seq_ops == ["lstm_1", "none"]
    assert c.features.fmax == 8000.0 and isinstance(c.features.fmax, float)
    save_config(c, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == c


def test_unknown_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  epochz: 3\n")
    with pytest.raises(ValueError, match="epochz"):
        load_config(bad)


def test_wrong_type_is_named():
    with pytest.raises(ValueError, match=r"search\.epochs.*'many'"):
        load_config(None, ["search.epochs=many"])


def test_missing_config_file_is_named():
    with pytest.raises(ValueError, match="nope.yaml"):
        load_config("nope.yaml")


def test_parse_variant_names_its_overrides_and_refuses_bad_text():
    assert parse_variant("base=") == ("base", [])
    assert parse_variant(" wide = train.init_channels=16, train.seq_hidden=64") == (
        "wide", ["train.init_channels=16", "train.seq_hidden=64"])
    # each override is one a config accepts
    assert load_config("cpu", overrides=parse_variant("w=train.init_channels=16")[1]).train.init_channels == 16
    for bad, message in (("wide", "expected NAME=key=value"), ("=search.epochs=2", "the name must be"),
                         ("a/b=search.epochs=2", "the name must be"), ("x=search.epochs", "is not key=value")):
        with pytest.raises(ValueError, match=message):
            parse_variant(bad)


def test_parse_override_nested():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_override("search.epochs")


def test_float_fields_take_exponents_yaml_reads_as_text(tmp_path):
    # PyYAML resolves "1e-4" (no dot) to a string; a float field takes it, in --set and in a YAML file.
    assert parse_override("train.lr=1e-4") == {"train": {"lr": "1e-4"}}
    config = load_config("demo", overrides=["train.lr=1e-4", "train.weight_decay=3E-5", "search.alpha_lr=+2e-3"])
    assert (config.train.lr, config.train.weight_decay, config.search.alpha_lr) == (1e-4, 3e-5, 2e-3)
    path = tmp_path / "c.yaml"
    path.write_text("extends: demo.yaml\ntrain:\n  lr: 5e-3\n")
    assert load_config(path).train.lr == 5e-3
    for bad in ("train.lr=fast", "train.lr=1e-4x", "train.epochs=1e2"):
        with pytest.raises(ValueError, match="expected"):
            load_config("demo", overrides=[bad])
