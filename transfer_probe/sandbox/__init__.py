"""Running untrusted, model-generated code for pass@k, and the pass@k estimator.

Model-generated code is untrusted. Nothing here runs it unless the user opted in, with
``allow_code_execution=True`` or the environment variable ``TRANSFER_PROBE_ALLOW_CODE_EXECUTION=1``;
otherwise :class:`CodeExecutionNotAllowed` says how to opt in.

    from transfer_probe.sandbox import Sandbox, pass_at_k

    sandbox = Sandbox(allow_code_execution=True, timeout=5, memory_mb=512)
    sandbox.check(problem, completion).passed          # HumanEval format: the problem's tests decide
    sandbox.run("assert sum([1, 2]) == 3").status      # 'passed': a whole program, its exit status
    pass_at_k(n=20, c=3, k=5)                          # 0.6009...

The operating system is the boundary (an audit hook is not: the program can switch it off).
``isolation`` chooses how:

- ``"namespace"`` (root, util-linux ``unshare``): new network (no interface up), PID, IPC and mount
  namespaces; every mount read-only except the work directory; the temporary directory and any
  directory on the way to the interpreter that others cannot enter (``/root``) covered by an empty
  tmpfs; the program and its judge each under an unprivileged uid of their own (one per run).
- ``"userns"`` (not root, unprivileged user namespaces): the same namespaces and mounts, the home
  directory covered too, inside a user namespace where the program has no capability left.
- ``"process"`` (root without namespaces, chosen explicitly): uids of their own, so files and
  processes of others are out of reach and everything the run leaves is found by owner and removed;
  the network and world-writable directories are not isolated.
- ``"unsafe-none"`` (chosen explicitly, by name): only the limits below, as the calling user.

``"auto"`` (the default) takes ``namespace`` as root and ``userns`` otherwise, and refuses to run
(:class:`IsolationUnavailable`) when neither is available. In every mode each program gets no new
privileges (``PR_SET_NO_NEW_PRIVS``), limits on CPU time, address space, file size (which bounds its
output), open files and processes (``RLIMIT_NPROC``, where the uid or user namespace is the run's
own), a wall-clock timeout, a fresh temporary working directory as ``HOME``, a cleaned environment and
``python -I -S``; its process group (or PID namespace) is killed at the end.

:meth:`Sandbox.check` runs the completion apart from the tests: see ``bootstrap`` for why nothing the
completion can reach decides the verdict. :attr:`Sandbox.signature` (isolation, user, limits) travels
with every pass@k number.

The parts: ``optin`` (the opt-in), ``passk`` (the estimator, the HumanEval program), ``isolation``
(which mode runs here, what it hides), ``uids`` (the root modes' own uids and the sweep after a run),
``bootstrap`` (the supervisor, program and judge processes), ``result`` (what happened to a program),
``box`` (:class:`Sandbox`, :func:`evaluate_pass_at_k`). Import from here: the parts may change.
"""

from __future__ import annotations

from transfer_probe.sandbox.box import Sandbox, evaluate_pass_at_k
from transfer_probe.sandbox.isolation import (
    ISOLATIONS,
    IsolationUnavailable,
    _uid_can_start,  # noqa: F401  (the tests ask it whether an unprivileged uid can start an interpreter)
    isolation_unavailable_reason,
    landlock_abi,
    namespace_isolation_available,
)
from transfer_probe.sandbox.optin import ALLOW_ENV, CodeExecutionNotAllowed, code_execution_allowed
from transfer_probe.sandbox.passk import estimate_pass_at_k, humaneval_program, pass_at_k
from transfer_probe.sandbox.result import ExecutionResult

__all__ = [
    "ALLOW_ENV",
    "CodeExecutionNotAllowed",
    "ExecutionResult",
    "Sandbox",
    "pass_at_k",
    "estimate_pass_at_k",
    "humaneval_program",
    "evaluate_pass_at_k",
    "code_execution_allowed",
    "namespace_isolation_available",
    "isolation_unavailable_reason",
    "landlock_abi",
    "IsolationUnavailable",
    "ISOLATIONS",
]
