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
