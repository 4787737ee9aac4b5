"""Glasshouse: run code isolated and record what the OS observed as a verifiable receipt."""

from glasshouse.core.version import RECEIPT_VERSION, __version__

__all__ = ["RECEIPT_VERSION", "__version__"]
