"""``glasshouse-server``: every flag of the server, in one place.

The flags build a :class:`~glasshouse.server._runner.ServerConfig`; :func:`serve` runs it
under uvicorn. Parts that add server options (signing keys, policies) add a click option
here and put what it means into ``ServerConfig`` (``receipt_hooks`` for receipt
post-processing) inside :func:`_config_from_options`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import click

from glasshouse.cli.params import SIZE
from glasshouse.core.version import __version__

_BACKENDS = ("auto", "microvm", "sandbox", "gvisor", "firecracker", "qemu", "process")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname: assume it is reachable from elsewhere


def read_tokens(path: Path) -> dict[str, str]:
    """The tenants' tokens in ``path`` (``name token`` lines, or one token alone: the
    admin's); refuses a file that is unreadable or malformed, saying where."""
    from glasshouse.server._tenancy import TokenFileError, parse_tokens

    try:
        st = path.stat()
        tokens = parse_tokens(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--token-file") from exc
    except TokenFileError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--token-file") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(
            f"glasshouse-server: warning: {path} is readable by others (chmod 600)", err=True
        )
    return tokens


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="glasshouse-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--backend",
    type=click.Choice(_BACKENDS),
    default="auto",
    show_default=True,
    help="auto = the strongest isolation that serves real work: microvm where guests boot "
    "and touching 32 MiB of fresh memory there is not far slower than in the bubblewrap "
    "sandbox (far slower: over 10x and over 1 s, or past a 5 s timeout), else the sandbox. "
    "Measured once per host, cached; /health shows the choice and the figures.",
)
@click.option(
    "--receipts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/glasshouse/receipts"),
    show_default=True,
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(1, 1024),
    default=os.cpu_count() or 1,
    show_default="CPU count",
    help="Runs executing at once.",
)
@click.option(
    "--queue",
    type=click.IntRange(0, 100_000),
    default=16,
    show_default=True,
    help="Runs waiting for a worker; beyond that, 429 with Retry-After.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Require 'Authorization: Bearer <token>' (mandatory on a non-loopback address): "
    "'name token' lines, one per tenant (each sees only its own sessions and receipts; the "
    "name 'admin' sees all), or one token alone (an admin).",
)
@click.option(
    "--allow-unsandboxed",
    is_flag=True,
    help="Permit --backend process: code runs as a plain host process. /health says so.",
)
@click.option(
    "--pool-size",
    type=click.IntRange(0, 256),
    default=None,
    help="Prewarmed sandbox slots kept ready (default: --max-concurrency; 0 disables).",
)
@click.option("--pool-max-age", type=float, default=60.0, show_default=True, help="Seconds.")
@click.option(
    "--live-slots/--fresh-slots",
    default=True,
    show_default=True,
    help="sandbox: pool slots with the sandbox and a python3 already up (code is handed to "
    "it), or only the sandbox's resources made ahead.",
)
@click.option(
    "--profile",
    type=click.Choice(["disabled", "host"]),
    default="host",
    show_default=True,
    help="Observe runs with the host eBPF observer (fail-open) or not at all.",
)
@click.option("--body-limit", type=SIZE, default="1M", show_default=True)
@click.option(
    "--output-limit",
    type=SIZE,
    default="1M",
    show_default=True,
    help="Default bytes kept per output stream (a request may set limits.output).",
)
@click.option("--memory", type=SIZE, default="512M", show_default=True, help="Default per run.")
@click.option("--pids", type=int, default=256, show_default=True, help="Default per run.")
@click.option(
    "--max-list",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Most entries each receipt list keeps; what a list leaves out is counted.",
)
@click.option(
    "--disk", type=SIZE, default="1G", show_default=True, help="Workspace disk quota per run."
)
@click.option(
    "--max-memory", type=SIZE, default="2G", show_default=True, help="Ceiling on limits.memory."
)
@click.option(
    "--max-pids",
    type=click.IntRange(1, 4096),
    default=1024,
    show_default=True,
    help="Ceiling on limits.pids.",
)
@click.option(
    "--max-output", type=SIZE, default="16M", show_default=True, help="Ceiling on limits.output."
)
@click.option(
    "--max-disk", type=SIZE, default="4G", show_default=True, help="Ceiling on limits.disk."
)
@click.option(
    "--max-timeout",
    type=click.FloatRange(1, 300),
    default=300.0,
    show_default=True,
    help="Ceiling on a request's timeout (seconds).",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds a client gets to send a request's head.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a client gets to send a request's body.",
)
@click.option(
    "--write-timeout",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds an answer may wait on a client that reads nothing; then it is dropped.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=None,
    help="Open connections at most (default: derived from ulimit -n minus the runs' needs).",
)
@click.option(
    "--shutdown-grace",
    type=float,
    default=10.0,
    show_default=True,
    help="On SIGTERM, seconds in-flight runs get to finish before they are killed.",
)
@click.option(
    "--max-sessions",
    type=click.IntRange(0, 10_000),
    default=32,
    show_default=True,
    help="Sessions open at once (running or paused); 0 turns sessions off.",
)
@click.option(
    "--session-ttl",
    type=click.FloatRange(0, 7 * 86400, min_open=True),
    default=3600.0,
    show_default=True,
    help="Seconds a session lives when its request names no ttl_s.",
)
@click.option(
    "--max-session-ttl",
    type=click.FloatRange(0, 7 * 86400, min_open=True),
    default=86400.0,
    show_default=True,
    help="Ceiling on a session's ttl_s (seconds).",
)
@click.option(
    "--session-idle-timeout",
    type=click.FloatRange(0, 7 * 86400, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds without a step, transfer or resume before a running session is closed, "
    "when its request names no idle_timeout_s.",
)
@click.option(
    "--max-file-size",
    type=SIZE,
    default="64M",
    show_default=True,
    help="Largest file the session files API uploads or downloads (413 beyond).",
)
@click.option(
    "--signing-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ed25519 private key (glasshouse keys generate): sign every stored receipt.",
)
@click.option(
    "--policy",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML policy evaluated over every receipt (the verdict is recorded, never enforced).",
)
@click.option(
    "--redact",
    is_flag=True,
    help="Replace secrets (tokens, keys, passwords) in receipts, e.g. in the code's argv.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
def main(**options: Any) -> None:
    """Serve POST /run (untrusted code in a fresh sandbox per request) and /sessions (a
    sandbox across steps), a receipt for each run and step."""
    config = _config_from_options(options)
    logging.basicConfig(
        level=options["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        serve(config, options["host"], options["port"], options["log_level"])
    except Exception as exc:
        click.echo(f"glasshouse-server: {exc}", err=True)
        sys.exit(2)


def _config_from_options(options: dict[str, Any]) -> Any:
    from glasshouse.server._runner import ServerConfig

    tokens = read_tokens(options["token_file"]) if options["token_file"] else {}
    if not tokens and not is_loopback(options["host"]):
        raise click.UsageError(f"binding to {options['host']} (not loopback) requires --token-file")
    if options["backend"] == "process" and not options["allow_unsandboxed"]:
        raise click.UsageError(
            "--backend process runs code unsandboxed with the server's privileges: "
            "add --allow-unsandboxed to accept that"
        )
    pool_size = options["pool_size"]
    hooks, signing_key = _trust_options(options)
    try:
        return ServerConfig(
            backend=options["backend"],
            receipts_dir=options["receipts_dir"],
            max_concurrency=options["max_concurrency"],
            queue=options["queue"],
            allow_unsandboxed=options["allow_unsandboxed"],
            pool_size=options["max_concurrency"] if pool_size is None else pool_size,
            pool_max_age_s=options["pool_max_age"],
            live_slots=options["live_slots"],
            profile=options["profile"],
            body_limit=options["body_limit"],
            output_limit=options["output_limit"],
            memory_bytes=options["memory"],
            pids=options["pids"],
            max_list=options["max_list"],
            disk_bytes=options["disk"],
            max_memory_bytes=options["max_memory"],
            max_pids=options["max_pids"],
            max_output_bytes=options["max_output"],
            max_disk_bytes=options["max_disk"],
            max_timeout_s=options["max_timeout"],
            header_timeout_s=options["header_timeout"],
            body_timeout_s=options["body_timeout"],
            write_timeout_s=options["write_timeout"],
            max_connections=options["max_connections"],
            shutdown_grace_s=options["shutdown_grace"],
            tokens=tokens,
            max_sessions=options["max_sessions"],
            session_ttl_s=options["session_ttl"],
            max_session_ttl_s=options["max_session_ttl"],
            session_idle_timeout_s=options["session_idle_timeout"],
            max_file_bytes=options["max_file_size"],
            receipt_hooks=hooks,
            signing_key=signing_key,
        )
    except ValueError as exc:  # a default above its ceiling...
        raise click.UsageError(str(exc)) from exc


def _trust_options(options: dict[str, Any]) -> tuple[list[Any], Any]:
    """--redact, --policy -> receipt hooks (in that order); --signing-key -> the loaded key.

    Files are loaded here, before serving: a bad one stops the server with the reason."""
    hooks: list[Any] = []
    signing_key = None
    if options.get("redact"):  # first: the policy judges, and the log stores, redacted data
        from glasshouse.receipt.redact import receipt_hook as redact_hook

        hooks.append(redact_hook())
    if options.get("policy"):
        from glasshouse.policy import PolicyError, load_policy, receipt_hook

        try:
            hooks.append(receipt_hook(load_policy(options["policy"])))
        except PolicyError as exc:
            raise click.BadParameter(exc.diagnostic(), param_hint="--policy") from exc
    if options.get("signing_key"):
        from glasshouse.receipt.sign import KeyFileError, load_private_key

        try:
            signing_key = load_private_key(options["signing_key"])
        except KeyFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--signing-key") from exc
    return hooks, signing_key


def serve(config: Any, host: str, port: int, log_level: str = "info") -> None:
    """Build the runner (failing fast if the backend cannot work) and serve until SIGTERM."""
    import uvicorn

    from glasshouse.server._http import ACCEPT_BATCH, http_limits, protocol_class
    from glasshouse.server._runner import Runner
    from glasshouse.server.app import create_app

    runner = Runner(config)
    try:
        limits = http_limits(config)  # after the backend opened what it keeps open
    except ValueError:
        runner.close()
        raise
    logging.getLogger("glasshouse.server").info(
        "at most %d connections; head %gs, body %gs, write %gs",
        limits.max_connections,
        limits.header_timeout_s,
        limits.body_timeout_s,
        limits.write_timeout_s,
    )
    app = create_app(runner)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Not inline: a signal handler runs on the main thread, which may hold the
            # runner's lock at that moment.
            threading.Thread(target=runner.begin_shutdown, daemon=True).start()
            super().handle_exit(sig, frame)

    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(config.shutdown_grace_s) + 30,
        server_header=False,
        # the deadlines and the connection cap (glasshouse.server._http) on uvicorn's h11
        # parser, and asyncio's accept loop, whose per-turn batch (backlog) they budget for
        http=protocol_class(limits),
        loop="asyncio",
        backlog=ACCEPT_BATCH,
    )
    _Server(uv_config).run()


if __name__ == "__main__":  # pragma: no cover
    main()
