"""The tamper-evident log: every kind of tampering is detected and the receipt named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from trust_helpers import real_receipt

from glasshouse.core.execution import new_execution_id
from glasshouse.receipt.canonical import seal_data
from glasshouse.receipt.log import INDEX, ReceiptLog
from glasshouse.receipt.model import Receipt
from glasshouse.receipt.verify_log import verify_log

N = 6


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A log of N real receipts (each a real run through the Engine and the process backend)."""
    directory = tmp_path_factory.mktemp("log")
    log = ReceiptLog(directory)
    ids = []
    for i in range(N):
        data = real_receipt(["sh", "-c", f"echo run {i}; exit {i % 3}"])
        ids.append(log.append(Receipt.model_validate(data)).execution_id)
    return directory, ids


@pytest.fixture
def log(pristine: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    directory, ids = pristine
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    return copy, ids


def _load(d: Path, rid: str) -> dict:
    return json.loads((d / f"{rid}.json").read_text())


def _save(d: Path, rid: str, data: dict, reseal: bool) -> None:
    if reseal:
        data = seal_data({**data, "digest": None})
    (d / f"{rid}.json").write_text(json.dumps(data))


def test_intact_log_verifies(log: tuple[Path, list[str]]) -> None:
    d, _ids = log
    report = verify_log(d)
    assert report.ok, report.problems
    assert report.receipts == N and report.last_sequence == N - 1 and report.indexed
    assert "OK" in report.summary()


@pytest.mark.parametrize("reseal", [False, True], ids=["in-place", "resealed"])
@pytest.mark.parametrize("victim", [0, 2, N - 1])
def test_modified_receipt_is_named(log: tuple[Path, list[str]], victim: int, reseal: bool) -> None:
    d, ids = log
    data = _load(d, ids[victim])
    data["outcome"]["exit_code"] = 0 if data["outcome"]["exit_code"] else 7
    _save(d, ids[victim], data, reseal)
    report = verify_log(d)
    assert not report.ok
    assert report.named("modified") == {ids[victim]}, report.problems


@pytest.mark.parametrize("victim", [0, 3, N - 1])
def test_deleted_receipt_is_named(log: tuple[Path, list[str]], victim: int) -> None:
    d, ids = log
    (d / f"{ids[victim]}.json").unlink()
    report = verify_log(d)
    assert report.named("deleted") == {ids[victim]}, report.problems
    assert [p.sequence for p in report.by_kind("deleted")] == [victim]


def test_deleted_receipt_without_index_is_located(log: tuple[Path, list[str]]) -> None:
    d, ids = log
    (d / INDEX).unlink()
    removed = _load(d, ids[2])
    (d / f"{ids[2]}.json").unlink()
    report = verify_log(d)
    (problem,) = report.by_kind("deleted")
    assert problem.sequence == 2 and removed["digest"] in problem.detail


def test_deleted_last_receipt_without_index_is_caught_by_head(
    log: tuple[Path, list[str]],
) -> None:
    d, ids = log
    (d / INDEX).unlink()
    (d / f"{ids[-1]}.json").unlink()
    report = verify_log(d)
    assert [p.sequence for p in report.by_kind("deleted")] == [N - 1]


def _foreign(sequence: int | None, previous: str | None) -> dict:
    data = real_receipt(["sh", "-c", "echo forged"])
    data["execution_id"] = new_execution_id()
    data.update(sequence=sequence, previous_digest=previous)
    return seal_data(data)


@pytest.mark.parametrize("where", ["duplicate", "unsequenced", "past-head", "spliced"])
def test_inserted_receipt_is_named(log: tuple[Path, list[str]], where: str) -> None:
    d, ids = log
    if where == "duplicate":
        forged = _foreign(3, _load(d, ids[2])["digest"])
    elif where == "unsequenced":
        forged = _foreign(None, None)
    elif where == "past-head":
        forged = _foreign(N, _load(d, ids[-1])["digest"])
    else:  # renumber everything after the insertion point and re-seal it, HEAD included
        forged = _foreign(3, _load(d, ids[2])["digest"])
        prev = forged["digest"]
        for seq, rid in enumerate(ids[3:], 4):
            data = _load(d, rid)
            data.update(sequence=seq, previous_digest=prev, digest=None)
            data = seal_data(data)
            _save(d, rid, data, reseal=False)
            prev = data["digest"]
        (d / "HEAD").write_text(json.dumps({"sequence": N, "digest": prev, "id": ids[-1]}))
    (d / f"{forged['execution_id']}.json").write_text(json.dumps(forged))
    report = verify_log(d)
    assert forged["execution_id"] in report.named("inserted"), report.problems
    assert not ({*ids} & report.named("inserted"))


def test_reordered_receipts_are_named(log: tuple[Path, list[str]]) -> None:
    """Swap sequence 1 and 2 and re-seal both with consistent links."""
    d, ids = log
    r0, r1, r2 = (_load(d, ids[i]) for i in range(3))
    r2.update(sequence=1, previous_digest=r0["digest"], digest=None)
    r2 = seal_data(r2)
    r1.update(sequence=2, previous_digest=r2["digest"], digest=None)
    r1 = seal_data(r1)
    _save(d, ids[1], r1, reseal=False)
    _save(d, ids[2], r2, reseal=False)
    report = verify_log(d)
    assert report.named("reordered") == {ids[1], ids[2]}, report.problems


def test_reordered_link_without_index(log: tuple[Path, list[str]]) -> None:
    """Without INDEX, a receipt whose link points elsewhere in the log is called reordered."""
    d, ids = log
    (d / INDEX).unlink()
    r0, r3 = _load(d, ids[0]), _load(d, ids[3])
    r3.update(previous_digest=r0["digest"])
    _save(d, ids[3], r3, reseal=True)
    report = verify_log(d)
    assert ids[3] in report.named("reordered"), report.problems


def test_renamed_file_and_garbage_are_reported(log: tuple[Path, list[str]]) -> None:
    d, ids = log
    (d / f"{ids[1]}.json").rename(d / f"{new_execution_id()}.json")
    (d / "junk.json").write_text("{not json")
    report = verify_log(d)
    assert ids[1] in report.named("modified")
    assert "junk.json" in report.named("unreadable")


def test_empty_and_missing_directories(tmp_path: Path) -> None:
    assert verify_log(tmp_path).ok
    with pytest.raises(NotADirectoryError):
        verify_log(tmp_path / "absent")


def test_append_writes_the_index(pristine: tuple[Path, list[str]]) -> None:
    d, ids = pristine
    lines = [json.loads(x) for x in (d / INDEX).read_text().splitlines()]
    assert [x["id"] for x in lines] == ids
    assert [x["sequence"] for x in lines] == list(range(N))


def test_signed_log_catches_a_consistent_forgery(tmp_path: Path) -> None:
    """An attacker who re-seals, re-links and rewrites HEAD and INDEX cannot re-sign."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    log = ReceiptLog(tmp_path, signing_key=key)
    ids = [
        log.append(Receipt.model_validate(real_receipt(["sh", "-c", f"exit {i}"]))).execution_id
        for i in range(3)
    ]
    assert all((tmp_path / f"{rid}.dsse.json").exists() for rid in ids)
    assert verify_log(tmp_path, key=key.public_key()).ok
    # forge: change the first receipt's exit code, then re-seal and re-link the whole chain
    prev = None
    lines = []
    for seq, rid in enumerate(ids):
        data = _load(tmp_path, rid)
        if seq == 0:
            data["outcome"]["exit_code"] = 42
        data.update(previous_digest=prev, digest=None)
        data = seal_data(data)
        _save(tmp_path, rid, data, reseal=False)
        prev = data["digest"]
        lines.append(json.dumps({"sequence": seq, "id": rid, "digest": prev}))
    (tmp_path / INDEX).write_text("\n".join(lines) + "\n")
    (tmp_path / "HEAD").write_text(json.dumps({"sequence": 2, "digest": prev, "id": ids[-1]}))
    assert verify_log(tmp_path).ok  # without the key, a consistent forgery passes
    report = verify_log(tmp_path, key=key.public_key())
    assert report.named("signature") == set(ids), report.problems
    (tmp_path / f"{ids[1]}.dsse.json").unlink()
    assert ids[1] in verify_log(tmp_path, key=key.public_key()).named("unsigned")
    other = Ed25519PrivateKey.generate().public_key()
    assert verify_log(tmp_path, key=other).named("signature") >= {ids[0], ids[2]}


def test_far_future_sequence_is_one_insertion_not_a_flood(log: tuple[Path, list[str]]) -> None:
    d, ids = log
    forged = _foreign(1000, _load(d, ids[-1])["digest"])
    (d / f"{forged['execution_id']}.json").write_text(json.dumps(forged))
    report = verify_log(d)
    assert report.named("inserted") == {forged["execution_id"]}
    assert not report.by_kind("deleted") and len(report.problems) == 1, report.problems


def test_a_run_of_deletions_without_index_is_one_problem(log: tuple[Path, list[str]]) -> None:
    d, ids = log
    (d / INDEX).unlink()
    for rid in ids[1:4]:
        (d / f"{rid}.json").unlink()
    (problem,) = verify_log(d).by_kind("deleted")
    assert problem.sequence == 1 and "sequences 1..3 are missing (3 receipts)" in problem.detail


# -- property: any tampering is detected, never a crash ---------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), st.integers(0, N - 1), st.booleans()),
        st.tuples(st.just("delete"), st.integers(0, N - 1)),
        st.tuples(st.just("insert"), st.one_of(st.none(), st.integers(0, N + 3))),
        st.tuples(st.just("swap"), st.integers(0, N - 1), st.integers(0, N - 1), st.booleans()),
        st.tuples(st.just("flip"), st.integers(0, N - 1), st.integers(0, 10_000)),
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(_OPS)
def test_any_tampering_is_detected(pristine: tuple[Path, list[str]], ops: list[tuple]) -> None:
    import tempfile

    src, ids = pristine
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "log"
        shutil.copytree(src, d)
        for op in ops:
            _apply(d, ids, op)
        changed = _contents(d) != _contents(src)  # e.g. two identical swaps undo each other
        report = verify_log(d)
        assert report.ok is not changed, (ops, report.problems)


def _apply(d: Path, ids: list[str], op: tuple) -> bool:
    kind = op[0]
    if kind == "edit":
        _, i, reseal = op
        data = _try_load(d / f"{ids[i]}.json")
        if data is None:
            return False
        data["duration_ms"] = int(data.get("duration_ms") or 0) + 1
        _save(d, ids[i], data, reseal)
        return True
    if kind == "delete":
        path = d / f"{ids[op[1]]}.json"
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed
    if kind == "insert":
        forged = _foreign(op[1], None)
        (d / f"{forged['execution_id']}.json").write_text(json.dumps(forged))
        return True
    if kind == "swap":
        _, i, j, reseal = op
        da, db = _try_load(d / f"{ids[i]}.json"), _try_load(d / f"{ids[j]}.json")
        if i == j or da is None or db is None:
            return False
        da["sequence"], db["sequence"] = db["sequence"], da["sequence"]
        _save(d, ids[i], da, reseal)
        _save(d, ids[j], db, reseal)
        return True
    _, i, pos = op  # flip one byte of a receipt file
    path = d / f"{ids[i]}.json"
    if not path.exists():
        return False
    raw = bytearray(path.read_bytes())
    raw[pos % len(raw)] ^= 0x20
    path.write_bytes(bytes(raw))
    return True


def _try_load(path: Path) -> dict | None:
    """A receipt file that is still a JSON object with a sequence (else the op is skipped)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("sequence"), int) else None


def _contents(d: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for path in sorted(d.iterdir()):
        raw = path.read_bytes()
        try:
            out[path.name] = json.loads(raw) if path.suffix == ".json" else raw
        except ValueError:
            out[path.name] = raw
    return out


def test_append_after_a_crash_between_index_and_head(tmp_path: Path) -> None:
    """INDEX is written before HEAD: a log that crashed between them continues correctly."""
    log = ReceiptLog(tmp_path)
    first = log.append(Receipt.model_validate(real_receipt(["true"])))
    stale_head = (tmp_path / "HEAD").read_bytes()
    second = log.append(Receipt.model_validate(real_receipt(["true"])))
    (tmp_path / "HEAD").write_bytes(stale_head)  # the crash: HEAD not updated
    third = log.append(Receipt.model_validate(real_receipt(["true"])))
    assert (first.sequence, second.sequence, third.sequence) == (0, 1, 2)
    assert third.previous_digest == second.digest
    assert verify_log(tmp_path).ok
