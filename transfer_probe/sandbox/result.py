"""What happened to one program: :class:`ExecutionResult`, the status it is given from the
supervisor's verdict and the captured streams (:func:`classify`), and reading those traces back."""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class ExecutionResult:
    """What happened to one program. ``passed``: for :meth:`Sandbox.check`, the problem's tests
    returned in the judge; for :meth:`Sandbox.run`, the program exited 0.

    ``status`` is one of ``passed``, ``failed`` (an exception or non-zero exit; ``error`` has the
    first line naming an exception), ``timeout`` (wall clock), ``cpu_limit``, ``memory_limit``,
    ``output_limit``, ``killed`` (another signal), ``sandbox_error`` (the sandbox itself failed).
    ``returncode`` is the program's exit status (negative: killed by that signal; ``None`` when the
    judge was done first and the program was stopped).
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    error: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def classify(role: str, verdict: dict | None, rc: int | None, timed_out: bool, stdout: str, stderr: str, *,
             timeout: float, cpu_seconds: int, memory_mb: int, max_output_bytes: int) -> tuple[str, str]:
    """``(status, error)`` of one run: for a check the judge's exit decides, for a run the program's;
    a limit is named by the signal or trace it leaves. The limits are the sandbox's, for the message."""
    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    if timed_out:
        return "timeout", f"wall-clock limit of {timeout:g} s"
    if verdict is None:
        if rc == 97 or "sandbox: " in stderr:
            return "sandbox_error", next((ln for ln in lines if ln.startswith("sandbox: ")), last)
        return "failed", f"no verdict: the sandbox's supervisor ended with status {rc} (killed by the program?)"
    if any(ln.startswith("sandbox: ") and "setup failed" in ln for ln in lines):
        return "sandbox_error", next(ln for ln in lines if "setup failed" in ln)
    judged, program = verdict.get("judge"), verdict.get("program")
    decisive = judged if role == "check" else program
    if decisive == ["exit", 0]:
        return "passed", ""
    sigs = {s[1] for s in (judged, program) if s and s[0] == "signal"}
    if signal.SIGXCPU in sigs:
        return "cpu_limit", f"CPU-time limit of {cpu_seconds} s"
    if signal.SIGXFSZ in sigs or max(len(stdout), len(stderr)) >= max_output_bytes:
        return "output_limit", f"output or file larger than {max_output_bytes} bytes"
    if any(ln.startswith("MemoryError") for ln in lines):
        return "memory_limit", f"address-space limit of {memory_mb} MiB"
    if decisive and decisive[0] == "signal":
        return "killed", f"killed by signal {_signame(decisive[1])}"
    return "failed", _first_error(lines) or f"exit status {decisive[1] if decisive else '?'}"


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Ended|Exit|Interrupt)\b")


def _first_error(lines: list[str]) -> str:
    """The program's own error rather than the judge's "it ended": the first exception line (the
    program may print anything to stderr, so only lines that name an exception count)."""
    errors = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    return errors[0] if errors else (lines[-1] if lines else "")


def read_verdict(fd: int) -> dict | None:
    # Every process that held the write end is gone (killed with its group or namespace), so this
    # read ends; a supervisor killed halfway leaves nothing parseable, which is no verdict.
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    try:
        verdict = json.loads(data)
    except ValueError:
        return None
    return verdict if isinstance(verdict, dict) else None


def read_bounded(path: str, limit: int) -> str:
    with open(path, "rb") as fh:
        data = fh.read(limit + 64)
    return data.decode("utf-8", "replace")
