"""Shared fixtures: every test is seeded; the real EmoDB corpus is read from ../shared/data/emodb."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EMODB_ROOT = PROJECT_ROOT.parent / "shared" / "data" / "emodb"


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most 4 (each worker holds a TensorFlow runtime of 1-3 GB)."""
    return max(1, min(4, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed_everything():
    from emodarts_tf.utils.seed import seed_everything

    seed_everything(1234)
    yield
    import keras

    keras.backend.clear_session()


@pytest.fixture(scope="session")
def emodb_root() -> Path:
    if not (EMODB_ROOT / "wav").is_dir():
        pytest.skip(f"EmoDB not found at {EMODB_ROOT}")
    return EMODB_ROOT


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: ``benchmarks/<name>.py`` imported as a module (the scripts are no package)."""
    import importlib.util

    def load(name: str):
        path = PROJECT_ROOT / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
