"""Version constants: the package version and the receipt grammar version."""

__version__ = "0.1.0"

#: The receipt grammar this build writes (seed 003).
RECEIPT_VERSION = "v0.3.0"
