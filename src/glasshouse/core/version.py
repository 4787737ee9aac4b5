"""Version constants: the package version and the receipt grammar versions."""

__version__ = "0.1.0"

#: The receipt grammar this build writes.
RECEIPT_VERSION = "v0.4.0"

#: Every receipt grammar this build reads, shows and verifies (v0.4.0 only adds fields).
RECEIPT_VERSIONS = ("v0.3.0", "v0.4.0")
