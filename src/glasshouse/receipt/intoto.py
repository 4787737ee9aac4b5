"""A receipt as an in-toto attestation with the runtime-trace predicate (v0.1).

The predicate is in-toto's `runtime-trace
<https://github.com/in-toto/attestation/blob/main/spec/predicates/runtime-trace.md>`_, v0.1
(the version on the spec's main branch): ``monitor``, ``monitoredProcess``, ``monitorLog``
(``process``, ``network``, ``fileAccess``) and ``metadata``. The statement's subjects are the
ones our own statement has (:func:`glasshouse.receipt.sign.subjects`: the command and the
outputs by digest), so both attestations of one run name the same artifacts.

What maps to what (the field list is in ``docs/trust.md``):

- ``monitorLog.process``: one object per ``process_tree`` node (the format is ours, named by
  ``monitor.type``: ``processBinary``, ``arguments``, ``pid``, ``ppid``, ...).
- ``monitorLog.network``: connects, datagrams and binds, with the remote ``ip``/``port``/
  ``protocol`` where the address is an IP endpoint.
- ``monitorLog.fileAccess``: ResourceDescriptors. Files with a digest in the receipt
  (``artifacts.inputs``, ``artifacts.outputs`` and any other ``artifacts`` list of
  ``path``/``size``/``sha256`` entries, and ``artifacts.workspace.files``: what the run left
  in its workspace) carry ``digest.sha256``; every other observed access (``filesystem``
  reads, writes, deletes, ...) is a ``file://`` URI with the kind of access, and carries the
  digest too where the receipt knows the content: a write (or rename) of a file still in the
  workspace at the end (``digestOf: runEnd``), a read of an input the run did not change
  (``digestOf: input``).
- ``metadata``: ``buildStartedOn``/``buildFinishedOn`` from ``timing``, and ``glasshouse``
  (an extension field): the receipt's id, version and digest, the outcome and the coverage
  (what was observed, events lost, lists capped, and the receipt's coverage statement:
  ``status``, ``complete``, ``reasons``, ``attached``, ``scope``), which the predicate has
  no field for.

Everything here is a pure function of the receipt's JSON data. Signing reuses the receipt's
DSSE envelope (:mod:`glasshouse.receipt.dsse`, payload type ``application/vnd.in-toto+json``);
:func:`glasshouse.receipt.sign.verify_attestation` verifies either kind of statement.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from glasshouse.receipt import dsse
from glasshouse.receipt.canonical import as_data, canonical_json, compute_digest
from glasshouse.receipt.sign import (
    PAYLOAD_TYPE,
    STATEMENT_TYPE,
    VerificationError,
    Verified,
    statement_with,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from glasshouse.receipt.model import Receipt

PREDICATE_TYPE = "https://in-toto.io/attestation/runtime-trace/v0.1"
#: Names the format of our ``process`` and ``network`` entries (the predicate leaves them to
#: the monitor) and of the ``glasshouse`` extension fields.
MONITOR_TYPE = "https://glasshouse.dev/runtime-trace/monitor/v1"
#: ``monitoredProcess.type``: a command run by Glasshouse.
RUN_TYPE = "https://glasshouse.dev/run/v1"
#: The name of our extension field in ``metadata`` (and nowhere else).
EXTENSION = "glasshouse"

_HEX64 = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")
_IP_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<v4>\d{1,3}(?:\.\d{1,3}){3})):(?P<port>\d+)$"
)
_URI = re.compile(r"^[a-z][a-z0-9+.-]*:\S+$")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z$")

# receipt field -> runtime-trace process entry field (the rest are camel-cased as they are).
_PROCESS_FIELDS = {
    "exe": "processBinary",
    "argv": "arguments",
    "started_at": "startedOn",
    "ended_at": "finishedOn",
}
# filesystem list -> the ``access`` annotation of its entries.
_ACCESS = {
    "reads": "read",
    "writes": "write",
    "deletes": "delete",
    "mkdirs": "mkdir",
}
# filesystem lists that are not file accesses (they stay in the receipt).
_NOT_ACCESSES = frozenset({"policy_violations"})


def runtime_trace_statement(receipt: Receipt | dict[str, Any]) -> dict[str, Any]:
    """The in-toto Statement v1 with the runtime-trace predicate for ``receipt``."""
    return statement_with(receipt, lambda _data: PREDICATE_TYPE, runtime_trace_predicate)


def sign_runtime_trace(receipt: Receipt | dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The statement of :func:`runtime_trace_statement` in a signed DSSE envelope (JSON data)."""
    body = canonical_json(runtime_trace_statement(receipt))
    return dsse.sign(PAYLOAD_TYPE, body, key).to_dict()


def runtime_trace_predicate(data: dict[str, Any]) -> dict[str, Any]:
    """The runtime-trace predicate of a sealed receipt (its JSON data)."""
    return {
        "monitor": _monitor(data),
        "monitoredProcess": _monitored_process(data),
        "monitorLog": {
            "process": [_process(node) for node in _list(data.get("process_tree"))],
            "network": _network(_dict(data.get("network"))),
            "fileAccess": _digested_files(_dict(data.get("artifacts")))
            + _file_accesses(
                _dict(data.get("filesystem")), _known_digests(_dict(data.get("artifacts")))
            ),
        },
        "metadata": _metadata(data),
    }


# -- monitor and monitored process ------------------------------------------------------------


def _monitor(data: dict[str, Any]) -> dict[str, Any]:
    observation = _dict(data.get("observation"))
    execution = _dict(data.get("execution"))
    environment = _dict(data.get("environment"))
    policy = {
        "glasshouseVersion": environment.get("glasshouse_version"),
        "backend": execution.get("backend"),
        "isolation": execution.get("isolation"),
        "network": _dict(environment.get("sandbox")).get("network"),
        "profile": observation.get("profile"),
        "observers": [_observer(o) for o in _list(observation.get("observers"))],
        "listCap": observation.get("list_cap"),
    }
    return {"type": MONITOR_TYPE, "tracePolicy": _drop_none(policy)}


def _observer(report: Any) -> dict[str, Any]:
    report = _dict(report)
    keep = ("name", "provenance", "available", "collected", "reason")
    return _drop_none({k: report.get(k) for k in keep})


def _monitored_process(data: dict[str, Any]) -> dict[str, Any]:
    hostname = _dict(data.get("environment")).get("hostname") or "unknown"
    return {
        "hostID": f"urn:glasshouse:host:{quote(str(hostname), safe='')}",
        "type": RUN_TYPE,
        "event": str(data.get("execution_id")),
    }


# -- processes --------------------------------------------------------------------------------


def _process(node: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"eventType": "process"}
    for key, value in _dict(node).items():
        if value is None or value is False:
            continue  # unset, or a flag that is off: absent, as the predicate's parsing rules allow
        entry[_PROCESS_FIELDS.get(key) or _camel(key)] = value
    return entry


# -- network ----------------------------------------------------------------------------------


def _network(network: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for item in _list(network.get("attempts")):
        item = _dict(item)
        if item.get("result") == "sent":
            continue  # a datagram without a connect: exported from ``sends`` as a send
        entry = {"eventType": "connect", **_endpoint(item.get("dst"), item.get("protocol"))}
        entry |= _drop_none({"result": item.get("result"), "family": item.get("family")})
        if item.get("pid") is not None:
            entry["invokingProcess"] = {"pid": item["pid"]}
        out.append(entry)
    for item in _list(network.get("sends")):
        item = _dict(item)
        entry = {"eventType": "send", **_endpoint(item.get("dst"), item.get("protocol"))}
        out.append(entry | {"bytes": item.get("bytes", 0)})
    for item in _list(network.get("binds")):
        item = _dict(item)
        out.append(
            _drop_none(
                {
                    "eventType": "listen" if item.get("listening") else "bind",
                    "localAddress": item.get("addr"),
                    "protocol": _lower(item.get("protocol")),
                }
            )
        )
    return out


def _endpoint(dst: Any, protocol: Any) -> dict[str, Any]:
    """``ip``/``port`` for an IP endpoint (``1.2.3.4:80``, ``[::1]:53``), else ``address``."""
    text = str(dst) if dst is not None else ""
    match = _IP_PORT.match(text)
    entry: dict[str, Any]
    if match and 0 < int(match.group("port")) < 65536:
        entry = {"ip": match.group("v4") or match.group("v6"), "port": int(match.group("port"))}
    else:
        entry = {"address": text}
    return entry | _drop_none({"protocol": _lower(protocol)})


# -- files ------------------------------------------------------------------------------------


def _digested_files(artifacts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``artifacts`` list entry with a path and a sha256: a descriptor with its digest."""
    out = []
    for key, items in _in_order(artifacts, ("inputs", "outputs")):
        access = {"inputs": "input", "outputs": "output"}.get(key, _camel(key))
        if key == "workspace":
            out += _workspace_files(_dict(items))
            continue
        for item in _list(items):
            item = _dict(item)
            match = _HEX64.match(item["sha256"]) if isinstance(item.get("sha256"), str) else None
            if not match or not isinstance(item.get("path"), str):
                continue  # no content to name (an output not taken out): the receipt says why
            notes = {"access": access, "size": item.get("size")}
            out.append(
                {
                    "name": item["path"],
                    "digest": {"sha256": match.group(1)},
                    "annotations": _drop_none(notes),
                }
            )
    return out


def _workspace_files(workspace: dict[str, Any]) -> list[dict[str, Any]]:
    """``artifacts.workspace.files``: what the run left in its workspace, each with its digest
    (a regular file hashed) or a ``file://`` URI (a symlink, a FIFO, a file over the cap)."""
    root = workspace.get("root") if isinstance(workspace.get("root"), str) else None
    out = []
    for item in _list(workspace.get("files")):
        item = _dict(item)
        if not isinstance(item.get("path"), str):
            continue
        notes = {
            "access": "written",
            "status": item.get("status"),
            "kind": item.get("kind"),
            "size": item.get("size"),
            "target": item.get("target"),
            "unhashed": item.get("unhashed"),
        }
        desc: dict[str, Any] = {"name": item["path"]}
        match = _HEX64.match(item["sha256"]) if isinstance(item.get("sha256"), str) else None
        if match:
            desc["digest"] = {"sha256": match.group(1)}
        else:
            desc["uri"] = file_uri(f"{root}/{item['path']}" if root else item["path"])
        desc["annotations"] = _drop_none(notes)
        out.append(desc)
    return out


def _known_digests(artifacts: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """``file://`` URI of a path as the workload saw it -> (sha256, what it is the digest
    of): each file the run left in its workspace (``runEnd``: its content when the run
    ended), and each input it did not change (``input``). Empty when the workspace was not
    listed."""
    workspace = _dict(artifacts.get("workspace"))
    root = workspace.get("root")
    if not workspace.get("collected") or not isinstance(root, str):
        return {}
    listed = {_dict(f).get("path"): _dict(f).get("sha256") for f in _list(workspace.get("files"))}
    known: dict[str, tuple[str, str]] = {}
    for item in _list(artifacts.get("inputs")):
        path, digest = _dict(item).get("path"), _dict(item).get("sha256")
        if isinstance(path, str) and isinstance(digest, str) and path not in listed:
            known[file_uri(f"{root}/{path}")] = (digest, "input")
    for path, digest in listed.items():
        if isinstance(path, str) and isinstance(digest, str):
            known[file_uri(f"{root}/{path}")] = (digest, "runEnd")
    return known


def _file_accesses(
    filesystem: dict[str, Any], digests: dict[str, tuple[str, str]] | None = None
) -> list[dict[str, Any]]:
    """Every observed file operation: a ``file://`` URI and what was done to the file; a
    read of an input the run did not change, and a write of a file still there at the end,
    carry its digest (``digestOf``: ``input`` or ``runEnd``)."""
    out = []
    for key, items in _in_order(filesystem, (*_ACCESS, "renames", "links", "failed")):
        if key in _NOT_ACCESSES:
            continue
        for item in _list(items):
            out += _accesses_of(key, item)
    for desc in out if digests else ():
        _add_digest(desc, digests or {})
    return out


def _add_digest(desc: dict[str, Any], digests: dict[str, tuple[str, str]]) -> None:
    access = desc["annotations"].get("access")
    found = digests.get(desc.get("uri", ""))
    if found is None:
        return
    digest, of = found
    if (access, of) in (("read", "input"), ("write", "runEnd"), ("rename-to", "runEnd")):
        match = _HEX64.match(digest)
        if match:
            desc["digest"] = {"sha256": match.group(1)}
            desc["annotations"]["digestOf"] = of


def _accesses_of(key: str, item: Any) -> list[dict[str, Any]]:
    if isinstance(item, str):
        return [_file(item, _ACCESS.get(key) or _camel(key))]
    item = _dict(item)
    if key == "renames":
        return [
            _file(str(item.get("src")), "rename-from"),
            _file(str(item.get("dst")), "rename-to"),
        ]
    if key == "links":
        return [
            _file(str(item.get("path")), "link", kind=item.get("kind"), target=item.get("target"))
        ]
    if key == "failed":
        return [_file(str(item.get("path")), "failed", op=item.get("op"), errno=item.get("errno"))]
    if isinstance(item.get("path"), str):  # a list this mapping does not know yet: keep it all
        rest = {_camel(k): v for k, v in item.items() if k != "path"}
        return [_file(item["path"], _camel(key), **rest)]
    return []


def _file(path: str, access: str, **notes: Any) -> dict[str, Any]:
    return {"uri": file_uri(path), "annotations": _drop_none({"access": access, **notes})}


def file_uri(path: str) -> str:
    """``/workspace/a b`` -> ``file:///workspace/a%20b`` (RFC 8089, percent-encoded)."""
    encoded = quote(path, safe="/")
    return f"file://{encoded}" if path.startswith("/") else f"file:{encoded}"


# -- metadata ---------------------------------------------------------------------------------


def _metadata(data: dict[str, Any]) -> dict[str, Any]:
    timing = _dict(data.get("timing"))
    network = _dict(data.get("network"))
    extension = {
        "receipt": _drop_none(
            {
                "executionId": data.get("execution_id"),
                "version": data.get("version"),
                "digest": data.get("digest"),
            }
        ),
        "outcome": _camel_keys(_dict(data.get("outcome"))),
        "coverage": _coverage(_dict(data.get("observation"))),
        "bytesSent": network.get("bytes_sent", 0),
        "bytesReceived": network.get("bytes_received", 0),
    }
    return _drop_none(
        {
            "buildStartedOn": _timestamp(timing.get("started_at")),
            "buildFinishedOn": _timestamp(timing.get("ended_at")),
            EXTENSION: extension,
        }
    )


def _coverage(observation: dict[str, Any]) -> dict[str, Any]:
    """The observation block but its observers (in ``monitor.tracePolicy``): what a consumer
    needs to trust an absence in ``monitorLog``. The receipt's coverage statement
    (``observation.coverage``: ``status``, ``complete``, ``reasons``, ``attached``,
    ``scope``) is lifted into it; a receipt without one gives the same object as before
    coverage was stated."""
    skip = {"observers", "profile", "list_cap", "coverage"}
    out = {_camel(k): v for k, v in observation.items() if k not in skip and v is not None}
    statement = _dict(observation.get("coverage"))
    for key in ("status", "complete", "reasons", "attached", "scope"):
        if key in statement:
            out[key] = statement[key]
    return out


def _timestamp(value: Any) -> str | None:
    """An RFC 3339 UTC timestamp as the predicate requires (``...Z``), or None."""
    if not isinstance(value, str):
        return None
    text = value.replace("+00:00", "Z")
    return text if _TIMESTAMP.match(text) else None


# -- small helpers ----------------------------------------------------------------------------


def _in_order(obj: dict[str, Any], first: tuple[str, ...]) -> list[tuple[str, Any]]:
    """``obj``'s items, ``first`` in that order, then the rest by name: the same statement
    whatever order the receipt's JSON keys came in."""
    rest = sorted(k for k in obj if k not in first)
    return [(k, obj[k]) for k in (*first, *rest) if k in obj]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _camel_keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {_camel(k): v for k, v in obj.items() if v is not None}


def _drop_none(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


# -- verification -----------------------------------------------------------------------------


def verify_statement(
    keyid: str, payload: bytes, *, receipt: Receipt | dict[str, Any] | None = None
) -> Verified:
    """Check a signed runtime-trace statement (its signature already verified by the caller).

    Without ``receipt``: the statement has the fields the predicate requires. With it: the
    statement is exactly what :func:`runtime_trace_statement` makes of that receipt, and the
    receipt's digest matches its content (so the fields the predicate cannot carry are tied
    to the signature too). Raises :class:`VerificationError` saying why not.
    """
    import json

    try:
        stmt = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError("bad_statement", f"the payload is not JSON: {exc}") from exc
    problems = statement_problems(stmt)
    if problems:
        shown = "; ".join(problems[:5]) + (
            f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        )
        raise VerificationError("bad_statement", f"not a runtime-trace statement: {shown}")
    data: dict[str, Any] = {}
    if receipt is not None:
        data = _matching_receipt(stmt, receipt)
    return Verified(keyid=keyid, statement=stmt, receipt=data)


def _matching_receipt(stmt: dict[str, Any], receipt: Receipt | dict[str, Any]) -> dict[str, Any]:
    from glasshouse.receipt.sign import differences

    if not isinstance(receipt, dict) and not hasattr(receipt, "model_dump"):
        raise VerificationError("receipt_mismatch", "the receipt given is not a JSON object")
    data = dict(as_data(receipt))
    try:
        actual = compute_digest(data)
    except Exception as exc:  # values canonical JSON cannot encode
        raise VerificationError(
            "receipt_mismatch", f"the receipt is not canonical JSON: {exc}"
        ) from exc
    if data.get("digest") and data["digest"] != actual:
        raise VerificationError(
            "receipt_mismatch", "the receipt's digest does not match its content (modified?)"
        )
    diffs = differences(runtime_trace_statement(data), stmt)
    if diffs:
        raise VerificationError(
            "receipt_mismatch",
            f"the receipt does not give the signed runtime trace: {_first(diffs, ', ')}",
        )
    return data


def _first(items: list[str], sep: str) -> str:
    more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
    return sep.join(items[:5]) + more


def statement_problems(stmt: Any) -> list[str]:
    """What makes ``stmt`` not an in-toto Statement v1 with a runtime-trace v0.1 predicate.

    Checks every field the specification marks required, and the type of every optional one
    that is present (``[]`` when there is nothing wrong).
    """
    if not isinstance(stmt, dict):
        return ["the statement is not a JSON object"]
    out = []
    if stmt.get("_type") != STATEMENT_TYPE:
        out.append(f"_type is {stmt.get('_type')!r}, expected {STATEMENT_TYPE!r}")
    if stmt.get("predicateType") != PREDICATE_TYPE:
        out.append(f"predicateType is {stmt.get('predicateType')!r}, expected {PREDICATE_TYPE!r}")
    subject = stmt.get("subject")
    if not isinstance(subject, list) or not subject:
        out.append("subject: a non-empty list is required")
    else:
        for i, item in enumerate(subject):
            if not isinstance(item, dict) or not _digest_ok(item.get("digest")):
                out.append(f"subject[{i}]: a digest set is required")
    predicate = stmt.get("predicate")
    if not isinstance(predicate, dict):
        return [*out, "predicate: an object is required"]
    return out + predicate_problems(predicate)


def predicate_problems(predicate: dict[str, Any]) -> list[str]:
    """The runtime-trace v0.1 field rules (spec/predicates/runtime-trace.md, "Fields")."""
    out = []
    monitor = predicate.get("monitor")
    if not isinstance(monitor, dict):
        out.append("monitor: an object is required")
    else:
        out += _uri_problem(monitor, "type", "monitor.type")
        if monitor.get("configSource") is not None and _descriptor_problem(monitor["configSource"]):
            out.append("monitor.configSource: not a ResourceDescriptor")
        if monitor.get("tracePolicy") is not None and not isinstance(monitor["tracePolicy"], dict):
            out.append("monitor.tracePolicy: not an object")
    monitored = predicate.get("monitoredProcess")
    if not isinstance(monitored, dict):
        out.append("monitoredProcess: an object is required")
    else:
        out += _uri_problem(monitored, "hostID", "monitoredProcess.hostID")
        out += _uri_problem(monitored, "type", "monitoredProcess.type")
        if not isinstance(monitored.get("event"), str) or not monitored["event"]:
            out.append("monitoredProcess.event: a string is required")
    out += _log_problems(predicate.get("monitorLog"))
    out += _metadata_problems(predicate.get("metadata"))
    return out


def _log_problems(log: Any) -> list[str]:
    if not isinstance(log, dict):
        return ["monitorLog: an object is required"]
    present = [k for k in ("process", "network", "fileAccess") if log.get(k) is not None]
    if not present:
        return ["monitorLog: at least one of process, network and fileAccess is required"]
    out = []
    for name in present:
        items = log[name]
        if not isinstance(items, list):
            out.append(f"monitorLog.{name}: not a list")
            continue
        for i, item in enumerate(items):
            problem = _descriptor_problem(item) if name == "fileAccess" else None
            if not isinstance(item, dict):
                out.append(f"monitorLog.{name}[{i}]: not an object")
            elif problem:
                out.append(f"monitorLog.fileAccess[{i}]: {problem}")
    return out


def _metadata_problems(metadata: Any) -> list[str]:
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["metadata: not an object"]
    out = []
    for name in ("buildStartedOn", "buildFinishedOn"):
        value = metadata.get(name)
        if value is not None and not (isinstance(value, str) and _TIMESTAMP.match(value)):
            out.append(f"metadata.{name}: not an RFC 3339 UTC timestamp")
    return out


def _uri_problem(obj: dict[str, Any], name: str, where: str) -> list[str]:
    value = obj.get(name)
    if not isinstance(value, str) or not _URI.match(value):
        return [f"{where}: a URI is required"]
    return []


def _descriptor_problem(item: Any) -> str | None:
    """Why ``item`` is not a ResourceDescriptor (one of uri, digest, content at least)."""
    if not isinstance(item, dict):
        return "not an object"
    if not any(item.get(k) for k in ("uri", "digest", "content")):
        return "a ResourceDescriptor needs one of uri, digest and content"
    if item.get("digest") is not None and not _digest_ok(item["digest"]):
        return "digest is not a digest set"
    if item.get("uri") is not None and not (
        isinstance(item["uri"], str) and _URI.match(item["uri"])
    ):
        return "uri is not a URI"
    return None


def _digest_ok(value: Any) -> bool:
    """A DigestSet: algorithm -> lowercase hex (a sha256 has 64 digits)."""
    if not isinstance(value, dict) or not value:
        return False
    for algorithm, digest in value.items():
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]+", digest):
            return False
        if algorithm == "sha256" and len(digest) != 64:
            return False
    return True
