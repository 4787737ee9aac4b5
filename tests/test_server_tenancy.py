"""Tenancy: a token file of ``name token`` lines; each token sees only its own receipts (and
sessions: test_server_sessions.py), the tenant ``admin`` sees all. Two real tokens, on a real
server process and in process."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from server_helpers import api, config, server_process

from glasshouse.server._index import INDEX_NAME
from glasshouse.server._tenancy import ADMIN, TokenFileError, TokenTable, parse_tokens

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef00"
ROOT = "admin-token-0123456789abcdef"
TOKENS = {"alice": ALICE, "bob": BOB, ADMIN: ROOT}


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ids(client, token: str) -> list[str]:
    response = client.get("/receipts?limit=1000", headers=_as(token))
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["receipts"]]


def _run(client, token: str, code: str = "print(1)") -> str:
    response = client.post("/run", json={"code": code}, headers=_as(token))
    assert response.status_code == 200, response.text
    return str(response.json()["receipt_id"])


def test_each_token_sees_only_its_own_receipts(tmp_path: Path) -> None:
    """A real server with a token file of three tenants; alice's receipt, run plainly and
    streamed, is hers and the admin's to see, not bob's (404, as for no receipt at all)."""
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# tenants\nalice {ALICE}\n\nbob {BOB}\n{ADMIN} {ROOT}\n")
    token_file.chmod(0o600)
    args = ["--backend", "process", "--allow-unsandboxed", "--profile", "disabled"]
    with (
        server_process([*args, "--token-file", str(token_file)], tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        mine = _run(client, ALICE)
        sse = {**_as(ALICE), "Accept": "text/event-stream"}
        with client.stream("POST", "/run", json={"code": "print(2)"}, headers=sse) as response:
            assert response.status_code == 200
            result = [line for line in response.iter_lines() if line.startswith("data: {")]
        streamed = json.loads(result[-1][len("data: ") :])["receipt_id"]
        theirs = _run(client, BOB)
        assert set(_ids(client, ALICE)) == {mine, streamed}
        assert _ids(client, BOB) == [theirs]
        assert {mine, streamed, theirs} <= set(_ids(client, ROOT))
        unknown = "exec-1700000000000-00000000000000000000"
        for rid in (mine, streamed):
            assert client.get(f"/receipts/{rid}", headers=_as(ALICE)).status_code == 200
            assert client.get(f"/receipts/{rid}", headers=_as(ROOT)).status_code == 200
            # another tenant's receipt answers as one that does not exist
            for missing in (rid, unknown):
                hidden = client.get(f"/receipts/{missing}", headers=_as(BOB))
                assert hidden.status_code == 404, hidden.text
                assert hidden.json()["error"] == {
                    "code": "not_found",
                    "message": f"no receipt {missing}",
                }
        assert client.get("/receipts").status_code == 401
        assert client.get("/receipts", headers=_as(ALICE + "x")).status_code == 401
        assert client.get("/metrics", headers=_as(ALICE)).status_code == 403
        assert client.get("/metrics", headers=_as(ROOT)).status_code == 200
        assert client.get("/health").status_code == 200


def test_envelopes_follow_their_receipts(tmp_path: Path) -> None:
    cfg = config(tmp_path, signing_key=Ed25519PrivateKey.generate(), tokens=TOKENS)
    with api(cfg) as client:
        rid = _run(client, ALICE)
        path = f"/receipts/{rid}/envelope"
        assert client.get(path, headers=_as(ALICE)).status_code == 200
        assert client.get(path, headers=_as(ROOT)).status_code == 200
        assert client.get(path, headers=_as(BOB)).json()["error"]["code"] == "not_found"
        assert client.get("/keys", headers=_as(BOB)).status_code == 200  # public: any tenant


def test_listing_pages_within_a_tenant(tmp_path: Path) -> None:
    with api(config(tmp_path, tokens=TOKENS)) as client:
        mine = [_run(client, ALICE) for _ in range(3)]
        _run(client, BOB)
        page = client.get("/receipts?limit=2", headers=_as(ALICE)).json()
        assert [r["id"] for r in page["receipts"]] == mine[:0:-1]
        rest = client.get(f"/receipts?limit=2&cursor={page['next_cursor']}", headers=_as(ALICE))
        assert [r["id"] for r in rest.json()["receipts"]] == [mine[0]]
        assert rest.json()["next_cursor"] is None


def test_a_rebuilt_index_shows_ownerless_receipts_to_admins_only(tmp_path: Path) -> None:
    """The owner lives in the index, not the receipt: rebuilt from the files, a receipt is
    nobody's, and only the admin sees it (fail closed)."""
    cfg = config(tmp_path, tokens=TOKENS)
    with api(cfg) as client:
        rid = _run(client, ALICE)
    (cfg.receipts_dir / INDEX_NAME).write_bytes(b"not sqlite")
    with api(cfg) as client:
        assert client.runner.index.rebuilt
        assert _ids(client, ALICE) == []
        assert client.get(f"/receipts/{rid}", headers=_as(ALICE)).status_code == 404
        assert _ids(client, ROOT) == [rid]


def test_an_index_from_before_tenancy_gets_the_owner_column(tmp_path: Path) -> None:
    receipts = tmp_path / "receipts"
    with api(config(tmp_path)) as client:  # no tokens: the anonymous admin
        rid = _run(client, "")
    db = sqlite3.connect(receipts / INDEX_NAME)
    db.executescript(  # the schema before tenancy, with its one row
        "DROP TABLE receipts; CREATE TABLE receipts (id TEXT PRIMARY KEY, sequence INTEGER,"
        " timestamp TEXT NOT NULL, exit_code INTEGER, timed_out INTEGER NOT NULL, error TEXT,"
        " duration_ms INTEGER NOT NULL, backend TEXT NOT NULL, isolation TEXT NOT NULL,"
        " code_hash TEXT, digest TEXT, ord INTEGER NOT NULL);"
        f"INSERT INTO receipts VALUES ('{rid}', 0, 't', 0, 0, NULL, 1, 'process', 'none',"
        " NULL, NULL, 0);"
    )
    db.close()
    with api(config(tmp_path, tokens=TOKENS)) as client:
        assert not client.runner.index.rebuilt  # migrated in place, not rebuilt
        assert _ids(client, ROOT) == [rid] and _ids(client, ALICE) == []
        new = _run(client, ALICE)
        assert _ids(client, ALICE) == [new]


def test_one_token_alone_is_the_admin(tmp_path: Path) -> None:
    assert parse_tokens("  single-token-0123456789  \n") == {ADMIN: "single-token-0123456789"}
    with api(config(tmp_path, token=ROOT)) as client:
        rid = _run(client, ROOT)
        assert _ids(client, ROOT) == [rid]
        assert client.get("/metrics", headers=_as(ROOT)).status_code == 200


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no token"),
        ("# only a comment\n", "no token"),
        ("short", "at least 16"),
        (f"alice {ALICE}\nbob\n", "line 2: expected 'name token', got 1 fields"),
        (f"alice {ALICE} admin\n", "got 3 fields"),
        (f"al/ice {ALICE}\n", "a name is"),
        (f"alice {ALICE}\nalice {BOB}\n", "'alice' is named twice"),
        (f"alice {ALICE}\nbob {ALICE}\n", "another tenant's token"),
        ("alice short\n", "line 1: a token has at least 16"),
    ],
)
def test_bad_token_files_are_refused(text: str, why: str) -> None:
    with pytest.raises(TokenFileError, match=why):
        parse_tokens(text)


def test_the_server_refuses_a_bad_token_file_at_startup(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"alice {ALICE}\nbob {ALICE}\n")
    out = subprocess.run(
        [sys.executable, "-m", "glasshouse.server.cli", "--token-file", str(token_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out
    assert "line 2: 'bob' has another tenant's token" in out.stderr


def test_token_lookup() -> None:
    table = TokenTable(TOKENS)
    alice = table.lookup(ALICE.encode())
    assert alice is not None and alice.name == "alice" and not alice.admin
    admin = table.lookup(ROOT.encode())
    assert admin is not None and admin.admin
    assert table.lookup(b"") is None and table.lookup(ALICE[:-1].encode()) is None
    assert alice.may_see("alice") and not alice.may_see("bob") and not alice.may_see(None)
    assert admin.may_see(None) and admin.may_see("bob")
