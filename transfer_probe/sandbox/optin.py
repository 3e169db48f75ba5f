"""The opt-in: nothing runs model-generated code unless the user asked for it, by argument or by
``TRANSFER_PROBE_ALLOW_CODE_EXECUTION=1``."""

from __future__ import annotations

import os

ALLOW_ENV = "TRANSFER_PROBE_ALLOW_CODE_EXECUTION"


class CodeExecutionNotAllowed(PermissionError):
    """Running generated code was asked for without the user's opt-in."""


def code_execution_allowed(explicit: bool | None = None) -> bool:
    """The opt-in: ``explicit`` when given, else ``TRANSFER_PROBE_ALLOW_CODE_EXECUTION`` is 1/true/yes."""
    if explicit is not None:
        return bool(explicit)
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _require_opt_in(explicit: bool | None, what: str) -> None:
    if not code_execution_allowed(explicit):
        raise CodeExecutionNotAllowed(
            f"{what} executes model-generated code, which is untrusted, so it is off by default. "
            f"To opt in, pass allow_code_execution=True or set the environment variable {ALLOW_ENV}=1. "
            "The code then runs in transfer_probe.sandbox (separate process, time/memory/output limits, "
            "no network, a temporary working directory; see the module docstring for what is isolated)."
        )

