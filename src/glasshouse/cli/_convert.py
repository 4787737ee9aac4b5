"""From an option's text to its value: sizes, ``KEY=VALUE`` pairs, workspace files and the
checks click's ``Path`` type makes. Shared by the click commands and the ``run`` fast path,
so both read an option the same way; imports neither click nor anything a run does not need.
A converter raises ``ValueError`` with the message a user sees.
"""

from __future__ import annotations

import os
import re
import stat

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'512M', '1g', '64KiB', '1048576' -> bytes (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 512M, 1G, 65536)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * _UNITS[unit])


def parse_env(values: tuple[str, ...]) -> dict[str, str]:
    """``("A=1", "B=")`` -> ``{"A": "1", "B": ""}``; a pair without ``=`` or a key is refused."""
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def read_files(values: tuple[str, ...]) -> dict[str, bytes]:
    """``("NAME=PATH", "PATH")`` -> workspace name -> the file's bytes (``PATH`` alone: its
    base name)."""
    files: dict[str, bytes] = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = os.path.basename(item), item
        try:
            with open(path, "rb") as fh:
                files[name] = fh.read()
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror}") from exc
    return files


def path_accepted(
    value: str,
    *,
    exists: bool = False,
    file_okay: bool = True,
    dir_okay: bool = True,
    allow_dash: bool = False,
) -> bool:
    """Would click's ``Path`` type (same flags, readable) take ``value``? The fast path asks
    this and leaves any refusal to click, which words it."""
    if value == "-" and file_okay and allow_dash:
        return True
    try:
        st = os.stat(value)
    except OSError:
        return not exists
    if not file_okay and stat.S_ISREG(st.st_mode):
        return False
    if not dir_okay and stat.S_ISDIR(st.st_mode):
        return False
    return os.access(value, os.R_OK)
