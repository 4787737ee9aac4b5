"""Sessions: a sandbox that lives across an agent's steps, every step receipted.

See :class:`Session`; the server's ``/sessions`` API and the MCP server are built on it.
"""

from glasshouse.session._session import (
    Session,
    SessionClosed,
    SessionFiles,
    StepResult,
    new_session_id,
)

__all__ = ["Session", "SessionClosed", "SessionFiles", "StepResult", "new_session_id"]
