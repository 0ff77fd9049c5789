"""benchmarks/profile_search_step.py's trace reading, on a hand-made profiler trace (no model is profiled)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def prof(load_benchmark):
    return load_benchmark("profile_search_step")


def test_op_type_of_event_names(prof):
    assert prof.op_type("model/cell_0/conv/Conv2D:Conv2D") == "Conv2D"
    assert prof.op_type("while/body/_12:MatMul") == "MatMul"
    assert prof.op_type("cell/conv:_MklNativeConv2D") == "_MklNativeConv2D"  # oneDNN's ops
    assert prof.op_type("ExecutorState::Process") is None  # a runtime event, not an op
    assert prof.op_type("a:b") is None  # lower case: no op type
    assert prof.op_type("no colon") is None


def test_self_time_subtracts_nested_events_only(prof):
    # a call [0, 100) holding two ops [10, 30) and [40, 90); the second holds [50, 60); an op [100, 120)
    # only touches the call's end, so it is not nested in it
    events = [("f:PartitionedCall", 0, 100), ("a:MatMul", 10, 20), ("b:While", 40, 50), ("c:Add", 50, 10),
              ("d:Relu", 100, 20)]  # fmt: skip
    own = {name: self_ps for name, _s, _d, self_ps in prof.self_times(events)}
    assert own == {"f:PartitionedCall": 30, "a:MatMul": 20, "b:While": 40, "c:Add": 10, "d:Relu": 20}
    assert sum(own.values()) == 120  # the thread's busy time


def test_aggregate_reads_host_threads_of_an_xspace(prof):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    host = space.planes.add(name="/host:CPU")
    for key, name in ((1, "x:MatMul"), (2, "y:Conv2D"), (3, "f:PartitionedCall"), (4, "ExecutorState::Process")):
        host.event_metadata[key].id = key
        host.event_metadata[key].name = name
    line = host.lines.add(id=1)
    for meta, start, dur in ((3, 0, 10**12), (1, 10**11, 2 * 10**11), (4, 4 * 10**11, 10**11), (2, 0, 0)):
        line.events.add(metadata_id=meta, offset_ps=start, duration_ps=dur)
    other = host.lines.add(id=2)
    other.events.add(metadata_id=1, offset_ps=0, duration_ps=5 * 10**11)
    space.planes.add(name="/device:GPU:0").lines.add().events.add(metadata_id=1, offset_ps=0, duration_ps=10**12)
    totals = prof.aggregate(space)
    assert totals["MatMul"] == {"self_s": pytest.approx(0.7), "calls": 2}  # two threads; the GPU plane ignored
    assert totals["PartitionedCall"] == {"self_s": pytest.approx(0.8), "calls": 1}  # the runtime event not subtracted
    assert totals["Conv2D"]["calls"] == 1
    text = prof.table({"order": "first", "profiled_step_s": 1.0, "ops": totals}, top=2)
    assert "| PartitionedCall | 0.800 | 53.3 % | 1 | 800.000 |" in text
    assert "(1 other types)" in text
