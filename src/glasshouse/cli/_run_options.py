"""What ``glasshouse run`` accepts: one table of its options, the only one.

The click command (:mod:`glasshouse.cli._run`, which ``--help`` and every error come from)
and the fast path (:mod:`glasshouse.cli._fast`, argparse, no click) are both built from
:data:`OPTIONS`, and both turn an option's text into its value with :func:`convert`, so they
cannot drift apart. Imports nothing a run does not need.
"""

from __future__ import annotations

from pathlib import Path

from glasshouse.cli._convert import parse_env, parse_size, read_files
from glasshouse.core.execution import DEFAULT_LIST_CAP

PROFILES = ("disabled", "host", "guest", "combined")

#: Option kinds: what the value is and how :func:`convert` reads it.
TEXT, CHOICE, FLOAT, INT, COUNT, SIZE, PATH, FLAG, SWITCH, ENV, FILES = (
    "text", "choice", "float", "int", "count", "size", "path", "flag", "switch", "env", "files",
)  # fmt: skip


class PathRule:
    """The checks click's ``Path`` type makes, and whether the value becomes a ``Path``."""

    __slots__ = ("allow_dash", "as_path", "dir_okay", "exists", "file_okay")

    def __init__(
        self,
        *,
        exists: bool = False,
        file_okay: bool = True,
        dir_okay: bool = True,
        allow_dash: bool = False,
        as_path: bool = False,
    ) -> None:
        self.exists, self.file_okay, self.dir_okay = exists, file_okay, dir_okay
        self.allow_dash, self.as_path = allow_dash, as_path


class Option:
    """One option of ``glasshouse run``: flags, destination, kind, default, help.

    ``loader``: the loader (``_trust_run.LOADERS``) that reads the value before anything runs
    (a signing key, a policy, redaction rules). ``off``: the flag turning a ``SWITCH`` off.
    ``multiple``: repeatable, the values collected in order. (A plain class, as ``PathRule``:
    making a dataclass costs a run's start a fraction of a millisecond each.)
    """

    __slots__ = (
        "choices",
        "default",
        "dest",
        "flags",
        "help",
        "kind",
        "loader",
        "metavar",
        "multiple",
        "off",
        "path",
        "show_default",
    )

    def __init__(
        self,
        *flags: str,
        dest: str,
        kind: str,
        help: str,
        default: object = None,
        show_default: bool = False,
        metavar: str | None = None,
        multiple: bool = False,
        choices: tuple[str, ...] = (),
        path: PathRule | None = None,
        off: str | None = None,
        loader: str | None = None,
    ) -> None:
        self.flags, self.dest, self.kind, self.help = flags, dest, kind, help
        self.default, self.show_default, self.metavar = default, show_default, metavar
        self.multiple, self.choices, self.path = multiple, choices, path
        self.off, self.loader = off, loader


_FILE = PathRule(dir_okay=False, as_path=True)
_DIR = PathRule(file_okay=False, as_path=True)

OPTIONS: tuple[Option, ...] = (
    Option(
        "--backend",
        "-b",
        dest="backend",
        kind=TEXT,
        default="process",
        show_default=True,
        help="process | sandbox | gvisor | microvm | firecracker | qemu | fake | auto. auto = "
        "the strongest isolation that serves real work: microvm where guests boot and touching "
        "32 MiB of fresh memory there is not far slower than in the sandbox (far slower: over "
        "10x and over 1 s, or past a 5 s timeout), else sandbox, else process; measured once, "
        "cached (glasshouse doctor shows the figures).",
    ),
    Option(
        "--profile",
        "-p",
        dest="profile",
        kind=CHOICE,
        choices=PROFILES,
        default="host",
        show_default=True,
        help="What to observe: nothing, the host kernel (eBPF), the VM guest, or both.",
    ),
    Option(
        "--receipt",
        dest="receipt_path",
        kind=PATH,
        path=_FILE,
        default=Path("receipt.json"),
        show_default=True,
        help="Where to write the receipt.",
    ),
    Option(
        "--timeout",
        "-t",
        dest="timeout",
        kind=FLOAT,
        help="Wall-clock limit in seconds (exit 124).",
    ),
    Option("--cpu", dest="cpu_s", kind=FLOAT, help="CPU time limit in seconds."),
    Option("--memory", dest="memory", kind=SIZE, help="Memory limit, e.g. 512M."),
    Option("--pids", dest="pids", kind=INT, help="Maximum number of processes."),
    Option(
        "--output-limit",
        dest="output_limit",
        kind=SIZE,
        default="16M",
        show_default=True,
        help="Bytes of each output stream kept in memory (the hash covers all).",
    ),
    Option("--file-size", dest="file_size", kind=SIZE, help="Largest file the command may write."),
    Option(
        "--disk",
        dest="disk",
        kind=SIZE,
        help="Most bytes the workspace may hold, e.g. 1G (sandbox, gvisor; past it: ENOSPC).",
    ),
    Option(
        "--network",
        dest="network",
        kind=SWITCH,
        off="--no-network",
        help="Allow network (default: on for process, off for isolating backends).",
    ),
    Option(
        "--env",
        "-e",
        dest="env",
        kind=ENV,
        multiple=True,
        metavar="KEY=VALUE",
        help="Set an environment variable (repeatable).",
    ),
    Option("--clean-env", dest="clean_env", kind=FLAG, help="Start from an empty environment."),
    Option(
        "--cwd",
        dest="cwd",
        kind=PATH,
        path=PathRule(file_okay=False),
        help="Working directory.",
    ),
    Option(
        "--stdin",
        dest="stdin_path",
        kind=PATH,
        path=PathRule(allow_dash=True, dir_okay=False),
        help="Feed this file ('-' for this terminal's stdin); default /dev/null.",
    ),
    Option(
        "--file",
        dest="files",
        kind=FILES,
        multiple=True,
        metavar="[NAME=]PATH",
        help="Copy a file into the sandbox workspace (isolating backends).",
    ),
    Option(
        "--output",
        dest="outputs",
        kind=TEXT,
        multiple=True,
        metavar="NAME",
        help="Copy a workspace file back after the run, to the same relative path under "
        "--output-dir (isolating backends; repeatable).",
    ),
    Option(
        "--output-dir",
        dest="output_dir",
        kind=PATH,
        path=_DIR,
        default=Path("."),
        show_default=True,
        help="Where --output files are saved (symlinks inside are never followed).",
    ),
    Option(
        "--max-list",
        dest="max_list",
        kind=COUNT,
        default=DEFAULT_LIST_CAP,
        show_default=True,
        help="Most entries kept per receipt list (processes, files, connections); the receipt "
        "counts what each capped list left out.",
    ),
    Option(
        "--redact",
        dest="redact",
        kind=FLAG,
        help="Replace secrets (tokens, keys, passwords) in the receipt by salted digests.",
    ),
    Option(
        "--redact-rules",
        dest="redact_rules",
        kind=PATH,
        path=PathRule(exists=True, dir_okay=False, as_path=True),
        loader="rules",
        help="YAML redaction rules (implies --redact); see docs/trust.md.",
    ),
    Option(
        "--policy",
        dest="policy",
        kind=PATH,
        path=_FILE,
        loader="policy",
        help="Evaluate this YAML policy; the verdict goes into the receipt (exit code unchanged).",
    ),
    Option(
        "--sign",
        dest="sign",
        kind=PATH,
        path=_FILE,
        metavar="KEY",
        loader="key",
        help="Sign the receipt with this Ed25519 private key (writes a DSSE envelope).",
    ),
    Option(
        "--envelope",
        dest="envelope",
        kind=PATH,
        path=_FILE,
        help="Where --sign writes the envelope (default: beside the receipt, *.dsse.json).",
    ),
    Option(
        "--quiet", "-q", dest="quiet", kind=FLAG, help="Do not echo output or print the summary."
    ),
    Option("--debug", dest="debug", kind=FLAG, help="Show tracebacks for Glasshouse's own errors."),
)


def convert(option: Option, value: object) -> object:
    """The value a run takes for ``option``, given its text (a tuple of them when
    ``multiple``, or the default). Raises ``ValueError`` for a value the option refuses.

    The click command reads FLOAT, INT, COUNT, CHOICE and SIZE through click types that do
    the same (``float``, ``int``, ``x>=1``, an exact choice, :func:`parse_size`), ENV and FILES
    through this function; a PATH's existence checks are click's (``_convert.path_accepted``
    says whether click would take it)."""
    if value is None:
        return None
    kind = option.kind
    if kind == FLOAT:
        return float(value)  # type: ignore[arg-type]
    if kind in (INT, COUNT):
        number = int(value)  # type: ignore[call-overload]
        if kind == COUNT and number < 1:
            raise ValueError(f"{number} is not in the range x>=1.")
        return number
    if kind == CHOICE and value not in option.choices:
        raise ValueError(f"{value!r} is not one of {', '.join(map(repr, option.choices))}.")
    if kind == SIZE:
        return value if isinstance(value, int) else parse_size(str(value))
    if kind == ENV:
        return parse_env(tuple(value))  # type: ignore[arg-type]
    if kind == FILES:
        return read_files(tuple(value))  # type: ignore[arg-type]
    if kind == PATH:
        assert option.path is not None
        return Path(str(value)) if option.path.as_path else str(value)
    if option.multiple:
        return tuple(value)  # type: ignore[arg-type]
    return value
