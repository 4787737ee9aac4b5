"""Glob patterns compiled to regular expressions, two flavours.

Path globs (file paths, executable paths): ``*`` and ``?`` stay within one path component,
``**`` crosses components (``/etc/**`` matches everything under /etc, ``**/*.pem`` any .pem
file), ``[abc]``/``[!abc]`` are character classes. Text globs (command lines, arguments):
``*`` matches anything, ``/`` included. Matching is case-sensitive and whole-string.
"""

from __future__ import annotations

import functools
import re


class GlobError(ValueError):
    pass


@functools.lru_cache(maxsize=4096)
def compile_glob(pattern: str, path: bool) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(pattern)
    star = "[^/]*" if path else ".*"
    one = "[^/]" if path else "."
    while i < n:
        c = pattern[i]
        if c == "*":
            if path and pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            while i < n and pattern[i] == "*":
                i += 1
            out.append(star)
            continue
        if c == "?":
            out.append(one)
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end < 0:
                raise GlobError(f"unclosed '[' in glob {pattern!r}")
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            if not body:
                raise GlobError(f"empty character class in glob {pattern!r}")
            body = body.replace("\\", "\\\\").replace("^", "\\^")
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as exc:
        raise GlobError(f"bad glob {pattern!r}: {exc}") from exc


def glob_match(pattern: str, text: str, path: bool) -> bool:
    return compile_glob(pattern, path).fullmatch(text) is not None
