"""One receipt pipeline for every producer: hooks -> seal -> sign -> store.

The CLI, the server, the agent and the library all finish a receipt the same way:

1. **hooks** (``ReceiptHook``: ``hook(receipt_data) -> receipt_data``), in order; redaction
   first (what follows sees, and stores, only redacted data), then policy;
2. **seal**: the content digest (``digest``);
3. **sign**: a DSSE envelope over the sealed receipt (with a signing key);
4. **store**: either one file written atomically (``path``, the envelope beside it), or an
   append to a hash-linked :class:`~glasshouse.receipt.log.ReceiptLog`, which links the
   receipt to the one before it before sealing and signing.

Nothing here imports pydantic, cryptography or yaml unless the step needs it, so the CLI's
hot path stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glasshouse.receipt.canonical import seal_data
from glasshouse.receipt.store import write_receipt

if TYPE_CHECKING:
    from glasshouse.receipt.log import ReceiptLog

#: A receipt post-processing step: takes receipt JSON data, returns (a copy of) it.
ReceiptHook = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class FinishedReceipt:
    """A sealed receipt and where it went."""

    data: dict[str, Any]
    path: Path | None = None
    envelope: dict[str, Any] | None = None
    envelope_path: Path | None = None

    @property
    def execution_id(self) -> str:
        return str(self.data["execution_id"])

    @property
    def digest(self) -> str:
        return str(self.data["digest"])


class ReceiptPipeline:
    """Finish receipts: ``hooks`` -> seal -> sign (``signing_key``) -> store (``log``).

    Without a ``log``, :meth:`finish` writes to the ``path`` it is given (or nowhere: the
    caller keeps the sealed data). Thread-safe when its hooks are (the shipped ones are).
    """

    def __init__(
        self,
        hooks: Sequence[ReceiptHook] = (),
        *,
        signing_key: Any = None,
        log: ReceiptLog | None = None,
    ) -> None:
        self.hooks = list(hooks)
        self.signing_key = signing_key
        self.log = log
        if log is not None and signing_key is not None and log.signing_key is None:
            log.signing_key = signing_key

    def apply_hooks(self, data: dict[str, Any]) -> dict[str, Any]:
        for hook in self.hooks:
            data = hook(data)
        return data

    def finish(
        self,
        data: dict[str, Any],
        *,
        path: str | os.PathLike[str] | None = None,
        envelope_path: str | os.PathLike[str] | None = None,
    ) -> FinishedReceipt:
        """Run the hooks, seal, sign and store ``data``; return the sealed receipt.

        With a log, the receipt is appended (``path`` must be None: the log names its files).
        Raises the store's error (``ReceiptStoreError`` for a log, ``OSError`` for a file)
        when the receipt could not be stored: the caller must not pretend it was.
        """
        data = self.apply_hooks({**data, "digest": None})
        if self.log is not None:
            if path is not None:
                raise ValueError("a pipeline with a receipt log stores there, not at a path")
            return self._append(data)
        sealed = seal_data(data)
        envelope = None
        env_path = None
        if self.signing_key is not None:
            from glasshouse.receipt.sign import envelope_path_for, sign_receipt, write_envelope

            envelope = sign_receipt(sealed, self.signing_key)
            if envelope_path is not None or path is not None:
                env_path = Path(envelope_path or envelope_path_for(path or ""))
                write_envelope(envelope, env_path)
        target = None
        if path is not None:
            write_receipt(sealed, path)
            target = Path(path)
        return FinishedReceipt(sealed, target, envelope, env_path)

    def _append(self, data: dict[str, Any]) -> FinishedReceipt:
        from glasshouse.receipt.model import Receipt

        assert self.log is not None
        stored = self.log.append(Receipt.model_validate(data)).model_dump(mode="json")
        path = self.log.path_for(stored["execution_id"])
        envelope = envelope_path = None
        if self.log.signing_key is not None:
            import json

            envelope_path = self.log.envelope_path_for(stored["execution_id"])
            envelope = json.loads(envelope_path.read_text())
        return FinishedReceipt(stored, path, envelope, envelope_path)
