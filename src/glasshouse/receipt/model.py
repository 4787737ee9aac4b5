"""The execution receipt, grammar v0.4.0 (v0.3.0, seed 003, plus additive fields).

Every field name of the seed's receipt is kept exactly, including the legacy top-level
``exit_code``, ``duration_ms`` and ``processes``. Additions are optional fields with defaults,
so a seed-shaped receipt still validates. The ``observation`` block says what was collected,
by which observer, how many events were lost, and why anything is missing: an empty list in a
receipt means "observed, and there was nothing", never "not looked at".

v0.4.0 adds ``artifacts.outputs`` and ``artifacts.inputs`` (the files copied out of and into
the run), ``artifacts.workspace`` (the files the run wrote that still exist, with digests),
``observation.list_cap``/``observation.omitted`` (lists cut at a cap, and by how much), and
``observation.harness`` (what Glasshouse itself ran to set the run up, kept out of the
workload's sections: its processes, with ``role: "harness"``, and counts of its
syscalls), ``network.attempts[].bytes`` (datagrams), ``syscalls.io_uring`` and
``observation.coverage`` (how complete the observation was, with the reasons when it was
not, ``attached``: when the observers began watching, and ``scope``: what they covered; a
v0.4.0 receipt written before it was added reads as coverage unknown). A v0.3.0
receipt still validates: the added fields are left out of its dump (so its digest and
signature still check), and a receipt that says v0.3.0 may not carry them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from glasshouse.core.version import RECEIPT_VERSION

Provenance = Literal["host", "guest", "combined", "none"]
Profile = Literal["disabled", "host", "guest", "combined"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Extended(_Model):
    """A section with fields added in v0.4.0 (``_added``): they are dumped only when set, so a
    v0.3.0 receipt dumps (and so digests) exactly as it was written; a v0.4.0 receipt is built
    with all of them set. (Only these sections pay for the serializer hook.)"""

    _added: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self._added - self.model_fields_set:
                data.pop(name, None)
        return data

    def added_fields_set(self) -> set[str]:
        return set(self._added & self.model_fields_set)


class Outcome(_Model):
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    timed_out: bool = False


class Timing(_Model):
    duration_ms: int
    cpu_time_ms: int | None = None
    started_at: str | None = None
    ended_at: str | None = None


class ExecImage(_Model):
    """One image a process ran (v0.4.0): the file the kernel executed and what it was given."""

    exe: str | None = None
    argv: list[str] = Field(default_factory=list)
    working_dir: str | None = None
    started_at: str | None = None
    argv_truncated: bool = False


class ProcessNode(_Model):
    pid: int
    ppid: int
    exe: str | None = None
    argv: list[str] = Field(default_factory=list)
    working_dir: str | None = None
    #: pid as seen inside the sandbox's pid namespace, where it differs from ``pid``.
    ns_pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    started_at: str | None = None
    ended_at: str | None = None
    argv_truncated: bool = False
    #: True when the process forked without exec (its exe/argv are its parent's image).
    forked_only: bool = False
    #: v0.4.0: "harness" on the processes of ``observation.harness`` (Glasshouse's own set-up
    #: processes); unset on the workload's, which are the only ones in ``process_tree``.
    role: Literal["workload", "harness"] | None = None
    #: v0.4.0: every image, in order, of a process that exec'd more than once (the last one
    #: is ``exe``/``argv``); unset for a process that exec'd once or not at all.
    execs: list[ExecImage] | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in ("role", "execs"):  # a v0.3.0 node dumps (and digests) as written
                if name not in self.model_fields_set:
                    data.pop(name, None)
        return data


class Rename(_Extended):
    src: str
    dst: str
    #: v0.4.0: renameat2(RENAME_EXCHANGE): both names stay, their files swapped (set only then).
    exchange: bool = False

    _added = frozenset({"exchange"})


class Link(_Model):
    target: str
    path: str
    kind: Literal["hard", "symbolic"]


class FailedFileOp(_Model):
    op: str
    path: str
    errno: str


class Filesystem(_Model):
    reads: list[str] = Field(default_factory=list)
    writes: list[str] = Field(default_factory=list)
    deletes: list[str] = Field(default_factory=list)
    policy_violations: list[str] = Field(default_factory=list)
    renames: list[Rename] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    mkdirs: list[str] = Field(default_factory=list)
    failed: list[FailedFileOp] = Field(default_factory=list)


class NetworkAttempt(_Model):
    dst: str
    protocol: str
    result: str
    family: str | None = None
    pid: int | None = None
    #: v0.4.0: bytes sent to ``dst`` by datagrams (``result: "sent"``; sendto, sendmsg,
    #: sendmmsg without a connect); unset on connection attempts.
    bytes: int | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and "bytes" not in self.model_fields_set:
            data.pop("bytes", None)  # a v0.3.0 attempt dumps (and digests) as it was written
        return data


class NetworkBind(_Model):
    addr: str
    protocol: str
    listening: bool = False


class NetworkSend(_Model):
    dst: str
    protocol: str
    bytes: int = 0


class Network(_Model):
    attempts: list[NetworkAttempt] = Field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0
    binds: list[NetworkBind] = Field(default_factory=list)
    sends: list[NetworkSend] = Field(default_factory=list)


class IoUring(_Model):
    """v0.4.0: what the workload did through io_uring, whose operations run no syscall of their
    own. Ops with a syscall twin (openat, openat2, unlinkat, renameat, mkdirat, symlinkat,
    linkat, ftruncate, connect, bind, listen, send/sendmsg to an address) are also in
    ``filesystem``/``network`` like their twins; bytes on sockets are in ``network``."""

    #: operations submitted, by IORING_OP name (``openat``, ``read``, ``uring_cmd``...)
    ops: dict[str, int] = Field(default_factory=dict)
    #: ops seen whose effect the receipt's sections cannot show (e.g. ``uring_cmd``)
    not_decoded: list[str] = Field(default_factory=list)
    #: ops submitted whose completion was never seen (in flight when the run ended): their
    #: effect, if any, is not in ``filesystem``/``network``
    unfinished: int = 0
    #: False when io_uring was set up but the observer could not see its operations at all
    observed: bool = True


class Syscalls(_Model):
    counts: dict[str, int] = Field(default_factory=dict)
    denied: list[str] = Field(default_factory=list)
    #: v0.4.0: set when the workload used io_uring (see :class:`IoUring`).
    io_uring: IoUring | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and "io_uring" not in self.model_fields_set:
            data.pop("io_uring", None)  # a v0.3.0 section dumps (and digests) as it was written
        return data


class Resources(_Model):
    max_rss_kb: int | None = None
    cpu_time_ms: int | None = None


class SandboxEnv(_Model):
    network: str = "enabled"
    #: Extra facts a sandboxing backend reports (namespaces, seccomp, uid, workspace...).
    details: dict[str, str | int | bool | list[str]] = Field(default_factory=dict)


class Environment(_Model):
    runtime: str
    os: str = "linux"
    arch: str
    sandbox: SandboxEnv = Field(default_factory=SandboxEnv)
    kernel: str | None = None
    hostname: str | None = None
    glasshouse_version: str | None = None


class ExecutionInfo(_Model):
    backend: str
    isolation: str
    #: Backend-specific facts (runtime, VMM, guest kernel/rootfs digests, ...).
    details: dict[str, str | int | bool | None] = Field(default_factory=dict)


class OutputFile(_Model):
    """A requested output file (``--output``, ``ExecutionSpec.outputs``) and what became of it."""

    #: Path relative to the run's workspace.
    path: str
    #: ``copied``: taken out of the run (and saved, when the caller saves outputs);
    #: ``skipped``: not taken out (missing, not a regular file, a symlink, over the cap);
    #: ``failed``: taken out but could not be saved. ``reason`` says why for the last two.
    status: Literal["copied", "skipped", "failed"]
    size: int | None = None
    sha256: str | None = None
    reason: str | None = None


class InputFile(_Model):
    """A file placed in the run's workspace before it started (``--file``)."""

    path: str
    size: int
    sha256: str


class WorkspaceFile(_Model):
    """A file the run wrote in its workspace that still exists at the end of the run."""

    #: relative to the workspace (``root``)
    path: str
    kind: Literal["file", "symlink", "fifo", "socket", "device"]
    #: ``created``: not an input; ``modified``: an input whose content or kind the run changed
    status: Literal["created", "modified"]
    #: bytes (a symlink: its target's length); null for a FIFO, socket or device
    size: int | None = None
    sha256: str | None = None
    #: why a regular file has no sha256: ``file_cap``, ``total_cap`` or ``unreadable``
    unhashed: Literal["file_cap", "total_cap", "unreadable"] | None = None
    #: a symlink's target as stored (never followed)
    target: str | None = None


class WorkspaceArtifacts(_Model):
    """v0.4.0: what the run left in its workspace (files it created, inputs it changed), or
    why that was not collected (``collected: false``: the process backend has no workspace,
    a VM guest does not send its listing back)."""

    collected: bool
    #: why not collected, or what the listing lacks (a walk cut short)
    reason: str | None = None
    #: the workspace as the workload saw it (``/workspace``)
    root: str | None = None
    #: in walk order; past ``observation.list_cap`` counted in ``observation.omitted``
    #: (``artifacts.workspace.files``)
    files: list[WorkspaceFile] = Field(default_factory=list)
    #: regular files listed without a digest (over a cap, unreadable)
    unhashed: int = 0
    #: bytes hashed (inputs read back to compare included)
    hashed_bytes: int = 0
    #: the per-file and per-run caps on the bytes hashed
    file_cap: int | None = None
    total_cap: int | None = None


class Artifacts(_Extended):
    _added = frozenset({"outputs", "inputs", "workspace"})

    stdout_hash: str
    stderr_hash: str
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    #: sha256 over the canonical JSON of the command (argv) that was run.
    command_hash: str | None = None
    #: v0.4.0: every requested output file, in the order requested.
    outputs: list[OutputFile] = Field(default_factory=list)
    #: v0.4.0: every input file, in the order given.
    inputs: list[InputFile] = Field(default_factory=list)
    #: v0.4.0: the files the run wrote that still exist at its end (absent from receipts
    #: written before it was listed).
    workspace: WorkspaceArtifacts | None = None


class ObserverReport(_Model):
    name: str
    provenance: Provenance
    available: bool
    reason: str | None = None
    collected: list[str] = Field(default_factory=list)
    events: int = 0
    events_lost: int = 0
    truncations: int = 0


class HarnessCounts(_Model):
    #: file syscalls (opens, creates, unlinks, mkdirs, renames, links, execs...) of harness
    #: processes, not recorded in ``filesystem``
    files: int = 0
    #: network syscalls (connect, bind, listen, sendto, sendmsg), not recorded in ``network``
    network: int = 0
    #: every syscall of harness processes, not counted in ``syscalls.counts``
    syscalls: int = 0


class Harness(_Model):
    """What Glasshouse itself ran to set the run up (the process backend's pre-exec code,
    bwrap, glasshouse-init before it execs the command, runsc, the VMM): kept out of the
    workload's sections, accounted for here."""

    processes: list[ProcessNode] = Field(default_factory=list)
    counts: HarnessCounts = Field(default_factory=HarnessCounts)


class CoverageReason(_Model):
    """One thing the observation did not see (docs/observe.md, "Coverage", lists the codes)."""

    #: machine-readable: ``events_lost``, ``list_capped``, ``blind:gvisor``, ``disabled``...
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*(:[a-z0-9_]+)?$")
    #: what was not seen, for a human
    message: str
    #: how many (events, entries, processes, calls), when countable
    count: int | None = None
    #: the observer it concerns (None: the run as a whole)
    observer: str | None = None
    #: the receipt sections it affects (empty: the whole run)
    sections: list[str] = Field(default_factory=list)
    #: a breakdown of ``count`` (lost events by cause, left-out entries by list...)
    detail: dict[str, int] = Field(default_factory=dict)


class ObserverAttachment(_Model):
    observer: str
    #: attached before the workload's first instruction
    before_start: bool
    #: ``gated`` (attached while the root was held at the backend's gate, released after),
    #: ``guest`` (recorded in the guest from before the command started: its claim),
    #: ``kernel_exec`` (made the root in the kernel at its exec: the agent), ``never``,
    #: ``unknown`` (not stated)
    how: str
    #: the evidence, for a human
    detail: str | None = None


class Attached(_Model):
    """When the observers began watching the run."""

    #: every observer attached before the workload's first instruction (False when none
    #: was, or one attached late or never)
    before_start: bool
    #: the observers' ``how``, joined by ``+`` (``none``: no observer)
    how: str
    observers: list[ObserverAttachment] = Field(default_factory=list)


class Scope(_Model):
    """What the observation covered, where known (null where not)."""

    #: the host pid the observers were attached to: the tree they followed by fork ancestry
    root_pid: int | None = None
    #: where the workload starts in that tree (the rest is harness): ``root_exec``,
    #: ``launcher``, ``none``, ``running``
    workload_start: str | None = None
    #: the run's cgroup v2 path and id (its inode)
    cgroup: str | None = None
    cgroup_id: int | None = None
    #: inode of the pid namespace the workload's processes live in (as in /proc/<pid>/ns/pid)
    pid_namespace: int | None = None
    note: str | None = None


class Coverage(_Extended):
    """How complete the observation was: whether an absence from this receipt's lists can be
    trusted. ``complete``: nothing is known to be missing; ``incomplete``: each reason says
    what was not seen; ``none``: no observation was made (the reasons say why)."""

    _added = frozenset({"attached", "scope"})

    status: Literal["complete", "incomplete", "none"]
    #: ``status == "complete"``
    complete: bool
    reasons: list[CoverageReason] = Field(default_factory=list)
    #: when the observers began watching (absent from receipts written before it was stated)
    attached: Attached | None = None
    #: what was observed: process tree root, cgroup, pid namespace (absent likewise)
    scope: Scope | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Coverage:
        if self.complete != (self.status == "complete"):
            raise ValueError(f"coverage.complete is {self.complete} but status is {self.status}")
        if (self.status == "complete") == bool(self.reasons):
            raise ValueError(
                "coverage.reasons must be empty when complete and given otherwise"
                f" (status {self.status}, {len(self.reasons)} reasons)"
            )
        return self


class ObservationBlock(_Extended):
    _added = frozenset({"list_cap", "omitted", "harness", "coverage"})

    profile: Profile
    #: Receipt sections that hold observed data.
    collected: list[str] = Field(default_factory=list)
    #: Receipt sections left empty, each with the reason.
    missing: dict[str, str] = Field(default_factory=dict)
    observers: list[ObserverReport] = Field(default_factory=list)
    events_lost: int = 0
    truncations: int = 0
    note: str | None = None
    #: v0.4.0: the most entries any one list of this receipt keeps (``process_tree`` and each
    #: list of ``filesystem``, ``network`` and ``syscalls``).
    list_cap: int | None = None
    #: v0.4.0: each list that reached ``list_cap`` (``filesystem.writes``...) -> how many
    #: entries it left out. Empty when nothing was left out.
    omitted: dict[str, int] = Field(default_factory=dict)
    #: v0.4.0: the harness the observers told apart from the workload (None: none did).
    harness: Harness | None = None
    #: v0.4.0: how complete the observation was (absent from receipts written before it was
    #: stated: their coverage is unknown).
    coverage: Coverage | None = None


class RedactionCount(_Model):
    rule: str
    count: int


class Redaction(_Model):
    """Secrets replaced by ``[REDACTED:<salted digest>]`` before the receipt was sealed."""

    #: Every rule that was active (a rule listed here and absent from ``applied`` found nothing).
    rules: list[str] = Field(default_factory=list)
    applied: list[RedactionCount] = Field(default_factory=list)
    #: ``per-run``: a random salt, discarded; ``configured``: the operator's salt (``salt_id``).
    salt: Literal["per-run", "configured"] = "per-run"
    salt_id: str | None = None


class PolicyEvidence(_Model):
    #: JSON pointer into this receipt (``/filesystem/writes/3``) of the item that matched.
    at: str
    value: Any = None


class PolicyRuleResult(_Model):
    rule: str
    action: Literal["deny", "warn"]
    severity: str
    description: str | None = None
    evidence: list[PolicyEvidence] = Field(default_factory=list)
    #: Evidence items found (``evidence`` keeps the first few).
    evidence_total: int = 0


class PolicyVerdict(_Model):
    """The result of evaluating a policy over this receipt (evaluation never changes a run)."""

    policy: str
    policy_digest: str
    passed: bool
    violations: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    fired: list[PolicyRuleResult] = Field(default_factory=list)
    #: Receipt sections the policy looks at that were not observed: a pass is then partial.
    unobserved: list[str] = Field(default_factory=list)


class LegacyProcess(_Model):
    pid: int
    ppid: int
    cmd: str


class SessionTransfer(_Model):
    """A file that went into the session's workspace (``upload``) or out of it
    (``download``) through the files API, between steps."""

    direction: Literal["upload", "download"]
    path: str
    size: int
    sha256: str
    at: str


class SessionStepRef(_Model):
    step: int
    execution_id: str
    digest: str | None = None


class SessionInfo(_Model):
    """Where a receipt sits in a session: a ``step`` (its number and the previous step's
    stored digest, a hash chain of the session) or the sealed ``session`` receipt (every
    step in order and why the session ended). ``transfers``: the files API's uploads and
    downloads (for a step: those since the previous step; for the session: all)."""

    id: str
    kind: Literal["step", "session"] = "step"
    step: int | None = None
    previous_step_digest: str | None = None
    interpreter_restarted: bool | None = None
    steps: list[SessionStepRef] | None = None
    reason: str | None = None
    transfers: list[SessionTransfer] = Field(default_factory=list)


class Receipt(_Extended):
    #: optional top-level fields, dumped only when set (so older receipts keep their digest)
    _added: ClassVar[frozenset[str]] = frozenset({"session"})

    version: Literal["v0.3.0", "v0.4.0"] = RECEIPT_VERSION  # type: ignore[assignment]
    execution_id: str
    provenance: Provenance
    timestamp: str
    outcome: Outcome
    timing: Timing
    process_tree: list[ProcessNode] = Field(default_factory=list)
    filesystem: Filesystem = Field(default_factory=Filesystem)
    network: Network = Field(default_factory=Network)
    syscalls: Syscalls = Field(default_factory=Syscalls)
    resources: Resources = Field(default_factory=Resources)
    environment: Environment
    execution: ExecutionInfo
    artifacts: Artifacts
    observation: ObservationBlock
    # Legacy top-level fields (seed 003).
    exit_code: int | None = None
    duration_ms: int = 0
    processes: list[LegacyProcess] = Field(default_factory=list)
    #: Server-side fields (seed 000).
    code_hash: str | None = None
    #: Tamper-evident log: position in a receipt store and the digest of the receipt before.
    sequence: int | None = None
    previous_digest: str | None = None
    #: Secret redaction applied before sealing (``glasshouse run --redact``).
    redaction: Redaction | None = None
    #: Policy verdict (``glasshouse run --policy``); denials also in filesystem.policy_violations.
    policy: PolicyVerdict | None = None
    #: A session's step or the session itself (``glasshouse.Session``, ``/sessions``).
    session: SessionInfo | None = None
    #: ``sha256:<hex>`` over the canonical JSON of the receipt without this field.
    digest: str | None = None

    @model_validator(mode="after")
    def _fields_of_its_version(self) -> Receipt:
        if self.version == "v0.3.0":
            for section in ("artifacts", "observation"):
                extra = sorted(getattr(self, section).added_fields_set())
                if extra:
                    raise ValueError(
                        f"{section}.{extra[0]} is a v0.4.0 field, not part of a v0.3.0 receipt"
                    )
        return self
