"""Which isolation can run here, and what each one needs: probing a mode once per interpreter,
resolving ``"auto"``, the ``unshare`` command a namespace mode starts under, what the program's mount
namespace covers (:func:`hide_plan`), and the kernel's Landlock version for the ``process`` mode.
The modes themselves are described in the package docstring."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any

from transfer_probe.sandbox.uids import UID_BASE

try:  # POSIX only; the pass@k estimator works everywhere
    import pwd
except ImportError:  # pragma: no cover - Windows
    pwd = None  # type: ignore[assignment]

ISOLATIONS = ("auto", "namespace", "userns", "process", "unsafe-none")


class IsolationUnavailable(ValueError):
    """The isolation asked for (or, with ``"auto"``, any real isolation) is not available here."""


_PROBE_LOCK = threading.Lock()
_PROBED: dict[tuple[str, str], str | None] = {}
_NS_ARGS = ["--net", "--mount", "--pid", "--ipc", "--fork", "--mount-proc"]
_USERNS_ARGS = ["--user", "--map-root-user", *_NS_ARGS]
SYS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def isolation_unavailable_reason(mode: str, python: str | None = None) -> str | None:
    """``None`` when isolation ``mode`` can run here, else why not (probed once per interpreter)."""
    if mode == "unsafe-none":
        return None if os.name == "posix" and pwd is not None else f"needs a POSIX system, this is {sys.platform}"
    python = python or sys.executable
    key = (mode, python)
    with _PROBE_LOCK:
        if key not in _PROBED:
            _PROBED[key] = _probe(mode, python)
        return _PROBED[key]


def namespace_isolation_available() -> bool:
    """True when ``isolation="namespace"`` (root, util-linux ``unshare``) can run here."""
    return isolation_unavailable_reason("namespace") is None


def _probe(mode: str, python: str) -> str | None:
    if sys.platform != "linux":
        return f"needs Linux, this is {sys.platform}"
    root = os.geteuid() == 0
    if mode in ("namespace", "process") and not root:
        return f"isolation={mode!r} needs root (it runs programs under uids of their own); use 'userns'"
    if mode == "userns" and root:
        return ("isolation='userns' is for non-root users (as root the mapped user would own root's files); "
                "use 'namespace'")
    if mode == "process":
        return _uid_can_start(python)
    unshare = shutil.which("unshare", path=SYS_PATH)
    if unshare is None:
        return "util-linux `unshare` is not installed"
    args = _NS_ARGS if mode == "namespace" else _USERNS_ARGS
    try:
        proc = subprocess.run([unshare, *args, "--", "/bin/sh", "-c", "mount --make-rprivate / && exit 0"],
                              capture_output=True, timeout=20, env={"PATH": SYS_PATH})
    except (OSError, subprocess.SubprocessError) as e:
        return f"`unshare {' '.join(args)}` failed: {e}"
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        hint = (" (unprivileged user namespaces off? see /proc/sys/kernel/unprivileged_userns_clone, "
                "/proc/sys/user/max_user_namespaces, AppArmor's userns restriction)") if mode == "userns" else ""
        return f"`unshare {' '.join(args)}` refused: {why[0]}{hint}"
    return None


def _uid_can_start(python: str) -> str | None:
    """Whether an unprivileged uid can start this interpreter (without a mount namespace there is
    no way to show it one under a private directory such as /root)."""
    try:
        proc = subprocess.run([python, "-I", "-S", "-c", "import ctypes, json, resource"], user=UID_BASE - 1,
                              group=UID_BASE - 1, extra_groups=[], capture_output=True, timeout=30, cwd="/")
    except (OSError, subprocess.SubprocessError) as e:
        return f"an unprivileged uid cannot start {python}: {e}"
    if proc.returncode != 0:
        return (f"an unprivileged uid cannot start {python} (is it under a private directory such as /root?); "
                "pass python= an interpreter others can read, or use 'namespace'")
    return None


def resolve(isolation: str, python: str) -> str:
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {', '.join(map(repr, ISOLATIONS))}, not {isolation!r}")
    if isolation != "auto":
        why = isolation_unavailable_reason(isolation, python)
        if why:
            raise IsolationUnavailable(f"isolation={isolation!r} is not available here: {why}")
        return isolation
    reasons = {}
    for mode in ("namespace", "userns"):
        reasons[mode] = isolation_unavailable_reason(mode, python)
        if reasons[mode] is None:
            return mode
    raise IsolationUnavailable(
        "no real isolation for model-generated code here, so pass@k refuses to run it: "
        + "; ".join(f"{m}: {r}" for m, r in reasons.items())
        + ". Run as root with util-linux `unshare` ('namespace'), or enable unprivileged user namespaces "
        "('userns'); as root without namespaces isolation='process' runs programs under their own uid "
        "(no network isolation). To run the code with only resource limits, opt in by name: "
        "isolation='unsafe-none' (on a disposable machine only)."
    )


def launch_command(mode: str, supervisor: list[str]) -> list[str]:
    """The command that starts the ``supervisor`` command line under isolation ``mode``."""
    if mode not in ("namespace", "userns"):
        return supervisor
    args = _NS_ARGS if mode == "namespace" else _USERNS_ARGS
    # The supervisor is PID 1 of the new namespaces: signals from inside cannot reach it, and when
    # it ends the kernel kills everything left there. (No shell in between: it would hold the
    # verdict pipe, dumpable, under the program's uid in a user namespace.)
    return [shutil.which("unshare", path=SYS_PATH) or "unshare", *args, "--", *supervisor]


def landlock_abi() -> int:
    """The Landlock ABI version of this kernel (0: none). Landlock lets an unprivileged process
    restrict itself: writes only beneath its work directory, no TCP (ABI >= 4), no signals out of
    its domain (ABI >= 6)."""
    if sys.platform != "linux":
        return 0
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION
    return max(int(abi), 0)


def _interpreter_paths(python: str) -> list[str]:
    paths = {os.path.dirname(os.path.realpath(python)), sys.base_prefix, sys.prefix, os.path.dirname(python)}
    return sorted(os.path.realpath(p) for p in paths)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def hide_plan(python: str, root: str, mode: str) -> list[list[Any]]:
    """``[[directory, [paths to keep visible]], ...]``: what the program's mount namespace covers
    with an empty tmpfs. The temporary directory (other runs' folders, the user's files), the
    user's home (``userns``: the program keeps the user's file rights), and directories the
    program's uid could not traverse to the interpreter (``/root`` for ``/root/.pyenv``)."""
    cover = {os.path.realpath(tempfile.gettempdir())}
    if mode == "userns":
        cover |= {os.path.realpath(h) for h in (os.path.expanduser("~"), pwd.getpwuid(os.getuid()).pw_dir)}
    keep_paths = _interpreter_paths(python) + [os.path.realpath(root)]
    for path in _interpreter_paths(python):
        parts = path.strip(os.sep).split(os.sep)
        for i in range(1, len(parts)):
            ancestor = os.sep + os.sep.join(parts[:i])
            if not os.stat(ancestor).st_mode & 0o001:
                cover.add(ancestor)
                break
    cover = {c for c in cover if c != os.sep and os.path.isdir(c)}
    cover = {c for c in cover if not any(o != c and _under(c, o) for o in cover)}  # outermost only
    plan = []
    for c in sorted(cover):
        keep = sorted({p for p in keep_paths if _under(p, c) and p != c})
        keep = [p for p in keep if not any(o != p and _under(p, o) for o in keep)]
        plan.append([c, keep])
    return plan

