"""Argument validators of the search space and the search model: each returns the checked value (normalised
where noted) or raises a ValueError that names the argument and the value received.

Genotype cells have their own validator, :func:`emodarts_tf.search_space.genotype.check_cell`. No TensorFlow
import here.
"""
from __future__ import annotations

import numbers

from emodarts_tf.search_space.primitives import KINDS, PRIMITIVES

_LAYOUTS = {3: "a sequence of rank 3 (B, T, features)", 4: "an input of rank 4 (B, H, W, C)"}


def check_bool(value, argument: str) -> bool:
    """``value`` if it is a bool (the layers' and the search's on/off switches)."""
    if not isinstance(value, bool):
        raise ValueError(f"{argument}: expected a bool, received {value!r}")
    return value


def check_choice(value, choices: tuple, argument: str):
    """``value`` if it is one of ``choices`` (a mode or setting named by string)."""
    if value not in choices:
        raise ValueError(f"{argument}: expected one of {choices}, received {value!r}")
    return value


def check_int(value, argument: str, minimum: int = 1, optional: bool = False):
    """An integer ``>= minimum`` (Python or NumPy, never a bool), returned as a Python int; with ``optional``,
    None is accepted and returned."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        expected = f"{'None or ' if optional else ''}an integer >= {minimum}"
        raise ValueError(f"{argument}: expected {expected}, received {value!r}")
    return int(value)


def check_number(value, argument: str, minimum: float = 0.0, strict: bool = False, optional: bool = False):
    """A real number ``>= minimum`` (``> minimum`` with ``strict``; never a bool), returned as a float; with
    ``optional``, None is accepted and returned."""
    if optional and value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not (value > minimum if strict else value >= minimum)):
        expected = f"{'None or ' if optional else ''}a number {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{argument}: expected {expected}, received {value!r}")
    return float(value)


def check_rate(value, argument: str) -> float:
    """A probability in ``[0, 1)`` (dropout, drop-path), returned as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"{argument}: expected a number in [0, 1), received {value!r}")
    return float(value)


def check_stride(stride) -> int | tuple:
    """The stride of a CNN op: 1 or 2 on both axes, or ``(stride_h, stride_w)`` with each 1 or 2 (``(2, 1)``
    halves frequency only). Returns an int when both axes agree, else a tuple of two ints."""
    if isinstance(stride, (list, tuple)):
        if len(stride) != 2 or any(isinstance(s, bool) or s not in (1, 2) for s in stride):
            raise ValueError(f"stride: expected 1, 2 or a pair of them (H, W), received {stride!r}")
        sh, sw = (int(s) for s in stride)
        return sh if sh == sw else (sh, sw)
    if isinstance(stride, bool) or stride not in (1, 2):
        raise ValueError(f"stride: expected 1, 2 or a pair of them (H, W), received {stride!r}")
    return int(stride)


def stride_pair(stride) -> tuple:
    """``(stride_h, stride_w)`` of a CNN op's stride (see :func:`check_stride`)."""
    s = check_stride(stride)
    return (s, s) if isinstance(s, int) else s


def check_kind(kind) -> str:
    """An op kind: ``"cnn"`` or ``"seq"``."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, received {kind!r}")
    return kind


def check_ops(ops_names, kind: str) -> tuple:
    """A non-empty tuple of distinct op names of ``kind`` ("cnn" or "seq"); returns it as a tuple."""
    universe = PRIMITIVES[check_kind(kind)]
    if isinstance(ops_names, str) or not isinstance(ops_names, (list, tuple)) or not ops_names:
        raise ValueError(f"ops: expected a non-empty tuple of {kind} op names, received {ops_names!r}")
    unknown = [op for op in ops_names if op not in universe]
    if unknown:
        raise ValueError(f"ops: expected names from {list(universe)}, received unknown op(s) {unknown}")
    if len(set(ops_names)) != len(ops_names):
        raise ValueError(f"ops: expected distinct op names, received {list(ops_names)}")
    return tuple(ops_names)


def check_num_heads(num_heads, units: int) -> int:
    """Attention heads: a positive divisor of ``units``."""
    if isinstance(num_heads, bool) or not isinstance(num_heads, numbers.Integral) or num_heads < 1 \
            or units % num_heads:
        raise ValueError(f"num_heads: expected a positive divisor of units={units}, received {num_heads!r}")
    return int(num_heads)


def check_rank(input_shape, rank: int, layer: str) -> None:
    """An input shape of rank 3 (a sequence ``(B, T, features)``) or 4 (``(B, H, W, C)``) for ``layer``."""
    if len(input_shape) != rank:
        raise ValueError(f"{layer}: expected {_LAYOUTS[rank]}, received shape {tuple(input_shape)}")


def check_pair(inputs, layer: str):
    """A cell's inputs ``[s0, s1]`` (the two previous cells' outputs), returned unchanged."""
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise ValueError(f"{layer}: expected inputs [s0, s1] (the two previous cells' outputs), received {inputs!r}")
    return inputs


def check_edge_weights(weights, cell) -> None:
    """Mixing weights of shape ``(cell.num_edges, len(cell.op_names))``; unknown dims pass (traced shapes)."""
    expected = (cell.num_edges, len(cell.op_names))
    received = tuple(weights.shape)
    if received != expected and None not in received:
        raise ValueError(f"{cell.name}: weights: expected shape {expected}, received {received}")
