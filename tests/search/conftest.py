"""Fixtures of the search tests that run real (micro) searches on the synthetic demo corpus."""
from __future__ import annotations

import pytest
from search_helpers import micro_config


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture(scope="session")
def demo_prepared(demo_cache):
    from emodarts_tf.data.prepare import prepare

    return prepare(micro_config(demo_cache), progress=False)


@pytest.fixture
def float64_policy():
    """Keras's dtype policy float64 for one test (the float64 gradient checks); the previous policy after it."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_dtype_policy(previous)
