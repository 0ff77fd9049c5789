"""The pieces of ``multi_worker`` that need no cluster: reading ``TF_CONFIG``, the one-line message for a lost
worker, the global-batch check (the cluster itself: ``tests/search/test_multi_worker.py``)."""
from __future__ import annotations

import json

import pytest
import tensorflow as tf

from emodarts_tf.utils import cluster, runtime

CLUSTER = {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}


def test_tf_config_is_read_and_checked(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable is not set"):
        cluster.tf_config()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="not JSON"):
        cluster.tf_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 2}}))
    with pytest.raises(ValueError, match="is not in its cluster"):
        cluster.tf_config()
    config = {"cluster": CLUSTER, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert cluster.tf_config() == config


def test_a_lost_worker_is_named_in_one_line(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 0}}))
    lost = tf.errors.UnavailableError(
        None, None, "Collective ops is aborted by: Error reported from /job:worker/task:1: Task "
        "/job:worker/replica:0/task:1 heartbeat timeout. This indicates that the remote task has failed",
    )  # fmt: skip
    # Without a multi-worker strategy in the process nothing is a lost worker.
    assert cluster.lost_worker_message(lost, "search", "rerun") is None
    monkeypatch.setitem(cluster._STRATEGY, "multi_worker", object())
    try:
        raise RuntimeError("fit failed") from lost
    except RuntimeError as exc:
        message = cluster.lost_worker_message(exc, "search", "Restart with --resume")
    assert message == ("search: lost worker 1 (10.0.0.2:12345): heartbeat timeout; the run stopped. "
                       "Restart with --resume")  # fmt: skip
    assert "\n" not in message
    assert cluster.lost_worker_message(ValueError("a bad config"), "search", "rerun") is None


def test_strategy_names_and_the_global_batch():
    assert "multi_worker" in runtime.STRATEGIES
    with pytest.raises(ValueError, match="train.strategy: expected one of"):
        runtime.resolve_strategy("several", "train.strategy")
    # One process: any batch; the check concerns MultiWorkerMirroredStrategy only.
    cluster.check_global_batch(7, tf.distribute.get_strategy(), "search.batch_size")
    assert cluster.is_chief()
    assert cluster.shard_by_data(tf.data.Dataset.range(3), tf.distribute.get_strategy()) is not None
