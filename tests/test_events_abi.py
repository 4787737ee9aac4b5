"""The kernel side (events.h) and the Python decoder agree on every shared constant and on
the event header's layout. Parsed from the header itself, so a change on one side alone
fails here (on any host: no BPF, no root)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from glasshouse.observe.ebpf import _decode

HEADER = Path(_decode.__file__).with_name("events.h")
_C_SIZES = {
    "unsigned short": "H",
    "unsigned int": "I",
    "int": "i",
    "unsigned long long": "Q",
    "long long": "q",
}


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def _defines() -> dict[str, int]:
    """Every ``#define GH_X <integer expression>`` of events.h, evaluated in order."""
    values: dict[str, int] = {}
    for name, expr in re.findall(
        r"^#define\s+(GH_\w+)\s+(.+)$", _strip_comments(HEADER.read_text()), re.M
    ):
        expr = re.sub(r"(\d+)u\b", r"\1", expr.strip())
        expr = re.sub(r"\bGH_\w+\b", lambda m: str(values[m.group(0)]), expr)
        if not re.fullmatch(r"[0-9xa-fA-F()+\-*<\s]+", expr):
            continue  # not an integer constant (none today)
        values[name] = int(eval(expr, {"__builtins__": {}}))  # digits and operators only
    return values


def _enum(name: str) -> dict[str, int]:
    body = re.search(rf"enum {name}\s*{{(.*?)}};", _strip_comments(HEADER.read_text()), re.S)
    assert body is not None, f"enum {name} not found in events.h"
    return {k: int(v) for k, v in re.findall(r"(GH_\w+)\s*=\s*(\d+)", body.group(1))}


def _event_header_format() -> str:
    """struct gh_event's fields before ``data``, as a struct module format."""
    body = re.search(r"struct gh_event\s*{(.*?)};", _strip_comments(HEADER.read_text()), re.S)
    assert body is not None
    fmt = "<"
    for ctype, field, count in re.findall(
        r"((?:unsigned )?(?:short|int|long long|char))\s+(\w+)(?:\[(\w+)\])?;", body.group(1)
    ):
        if field == "data":
            break
        code = _C_SIZES[ctype]
        fmt += f"{int(count)}{code}" if count else code
    return fmt


def test_header_is_found_and_parsed() -> None:
    defines = _defines()
    assert "GH_HDR_SIZE" in defines and "GH_STAT_STRIDE" in defines  # the parser works


@pytest.mark.parametrize(
    ("c_name", "py_name"),
    [
        ("GH_NR_SYSCALLS", "NR_SYSCALLS"),
        ("GH_STAT_LOST", "STAT_LOST"),
        ("GH_STAT_TRUNC", "STAT_TRUNC"),
        ("GH_STAT_TX", "STAT_TX"),
        ("GH_STAT_RX", "STAT_RX"),
        ("GH_STAT_EMITTED", "STAT_EMITTED"),
        ("GH_STAT_UNKNOWN_NR", "STAT_UNKNOWN_NR"),
        ("GH_STAT_STRIDE", "STAT_STRIDE"),
        ("GH_MAX_SLOTS", "MAX_SLOTS"),
        ("GH_PENDING", "PENDING"),
        ("GH_HDR_SIZE", "HDR_SIZE"),
        ("GH_F_DIR1", "F_DIR1"),
        ("GH_F_DIR3", "F_DIR3"),
        ("GH_F_ROOT", "F_ROOT"),
        ("GH_F_HARNESS", "F_HARNESS"),
        ("GH_F_UNLINKED1", "F_UNLINKED1"),
        ("GH_F_UNLINKED3", "F_UNLINKED3"),
        ("GH_F_PSEUDO1", "F_PSEUDO1"),
        ("GH_F_PSEUDO3", "F_PSEUDO3"),
        ("GH_SLOT_MASK", "SLOT_MASK"),
        ("GH_STAT_HARNESS_SYS", "STAT_HARNESS_SYS"),
        ("GH_STAT_HARNESS_FILE", "STAT_HARNESS_FILE"),
        ("GH_STAT_HARNESS_NET", "STAT_HARNESS_NET"),
        ("GH_URING_OPS", "URING_OPS"),
        ("GH_STAT_URING", "STAT_URING"),
        ("GH_STAT_ASYNC_EMITTED", "STAT_ASYNC_EMITTED"),
        ("GH_STAT_ASYNC_LOST", "STAT_ASYNC_LOST"),
        ("GH_STAT_URING_SETUP", "STAT_URING_SETUP"),
    ],
)
def test_constants_agree(c_name: str, py_name: str) -> None:
    assert _defines()[c_name] == getattr(_decode, py_name)


def test_network_and_io_uring_flags_agree() -> None:
    from glasshouse.observe.ebpf import _net, _uring

    defines = _defines()
    assert defines["GH_F_FASTOPEN"] == _net.F_FASTOPEN
    assert defines["GH_F_DONE"] == _uring.F_DONE
    # the per-opcode counters end with the bucket for opcodes past the decoder's table
    assert defines["GH_URING_OPS"] - 1 == _uring.OTHER >= len(_uring.OP_NAMES)
    # every counter block of a slot fits in its stride, and none overlaps another
    assert defines["GH_STAT_URING"] + defines["GH_URING_OPS"] <= defines["GH_STAT_ASYNC_EMITTED"]
    assert defines["GH_STAT_URING_SETUP"] < defines["GH_STAT_STRIDE"]


def test_workload_start_modes_agree() -> None:
    from glasshouse.observe import ebpf

    defines = _defines()
    assert defines["GH_WS_SHIFT"] == ebpf._WS_SHIFT
    assert {k: defines[f"GH_WS_{k.upper()}"] for k in ebpf._WS_MODES} == ebpf._WS_MODES


def test_truncation_flags_agree() -> None:
    defines = _defines()
    assert tuple(defines[f"GH_F_TRUNC{i}"] for i in range(4)) == _decode.F_TRUNC


def test_event_types_agree() -> None:
    types = _enum("gh_event_type")
    python = {
        "GH_EV_FORK": _decode.EV_FORK,
        "GH_EV_EXEC": _decode.EV_EXEC,
        "GH_EV_EXIT": _decode.EV_EXIT,
        "GH_EV_FILE": _decode.EV_FILE,
        "GH_EV_NET": _decode.EV_NET,
        "GH_EV_CONN": _decode.EV_CONN,
        "GH_EV_URING": _decode.EV_URING,
    }
    assert types == python


def test_event_header_layout_agrees() -> None:
    fmt = _event_header_format()
    assert fmt == _decode.HDR.format
    assert struct.calcsize(fmt) == _defines()["GH_HDR_SIZE"]
    assert _defines()["GH_DATA_MAX"] + _defines()["GH_HDR_SIZE"] == 65536
