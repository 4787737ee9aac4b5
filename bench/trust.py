"""Cost of trust per receipt: redact, policy, sign, verify, verify-log, against sealing.

    .venv/bin/python bench/trust.py [--n 2000]

The receipt is a real run's (Engine + process backend) filled with observed-looking
sections (a few processes, files and connections). The baseline, measured in the same run,
is sealing it (RFC 8785 canonical JSON + SHA-256), which every receipt pays anyway.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table

POLICY = """\
rules:
  - id: no-public-network
    match:
      all:
        - network: {cidr: [0.0.0.0/0, "::/0"]}
        - not: {network: {cidr: [127.0.0.0/8, 10.0.0.0/8, "::1/128"]}}
  - id: no-secrets-read
    match:
      any:
        - file: {path: ["**/.ssh/*", "**/.aws/credentials", /etc/shadow], op: read}
        - exec: {argv: "*printenv*"}
  - id: no-system-writes
    match: {file: {path: ["/etc/**", "/usr/**"], op: [write, delete, rename]}}
  - id: fork-storm
    match: {syscall: {name: [clone, clone3, fork, vfork], over: 200, total: true}}
"""


def _receipt() -> dict:
    from glasshouse.backends import create
    from glasshouse.core.execution import ExecutionSpec
    from glasshouse.engine import Engine

    data = Engine(create("process")).run(ExecutionSpec(argv=["true"])).receipt_data
    data["process_tree"] = [
        {"pid": 10 + i, "ppid": 9 + i, "exe": "/usr/bin/python3", "argv": ["python3", f"s{i}.py"]}
        for i in range(5)
    ]
    data["filesystem"]["reads"] = [f"/work/src/file{i}.py" for i in range(40)]
    data["filesystem"]["writes"] = [f"/work/out/{i}.txt" for i in range(10)]
    data["network"]["attempts"] = [
        {"dst": f"10.0.0.{i}:443", "protocol": "tcp", "result": "attempted"} for i in range(5)
    ]
    data["syscalls"]["counts"] = {"openat": 120, "read": 400, "clone": 5, "write": 80}
    return data


def _per_op(fn, n: int) -> float:
    fn()  # warm caches and imports
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    n = parser.parse_args().n

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from glasshouse.policy import evaluate, parse_policy
    from glasshouse.receipt.canonical import seal_data
    from glasshouse.receipt.log import ReceiptLog
    from glasshouse.receipt.model import Receipt
    from glasshouse.receipt.redact import Redactor
    from glasshouse.receipt.sign import sign_receipt, verify_envelope
    from glasshouse.receipt.verify_log import verify_log

    data = _receipt()
    sealed = seal_data(copy.deepcopy(data))
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    policy = parse_policy(POLICY)
    envelope = sign_receipt(sealed, key)
    redactor = Redactor()

    cases = {
        "seal (baseline)": lambda: seal_data({**data, "digest": None}),
        "redact": lambda: redactor.redact_receipt(data),
        "policy evaluate": lambda: evaluate(policy, data),
        "sign (statement+DSSE)": lambda: sign_receipt(sealed, key),
        "verify envelope": lambda: verify_envelope(envelope, pub),
    }
    results = {name: _per_op(fn, n) for name, fn in cases.items()}

    root = Path(tempfile.mkdtemp(prefix="gh-bench-trust-"))
    try:
        log = ReceiptLog(root)
        model = Receipt.model_validate(data)
        from glasshouse.core.execution import new_execution_id

        count = min(n, 1000)
        for _ in range(count):
            log.append(model.model_copy(update={"execution_id": new_execution_id()}))
        t0 = time.perf_counter()
        assert verify_log(root).ok
        results["verify-log (per receipt)"] = (time.perf_counter() - t0) / count
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = results["seal (baseline)"]
    rows = [
        (name, f"{t * 1e6:,.0f}", f"{1 / t:,.0f}", f"{t / base:.2f}x")
        for name, t in results.items()
    ]
    print(f"receipt: {len(str(sealed))} characters of JSON; {n} iterations per case")
    print_table(rows, ("operation", "us/op", "ops/s", "vs seal"))


if __name__ == "__main__":
    main()
