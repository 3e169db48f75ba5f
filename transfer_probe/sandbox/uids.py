"""The run's own uids (root modes): each program and its judge run under two uids taken from a range
no account uses, so nothing else shares their files, signals, ptrace or process-count limit, and
everything they leave can be found by owner and removed (:func:`release_uids`)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import threading
import time

UID_BASE, _UID_SPAN = 0x70000000, 1 << 24
_UID_LOCK = threading.Lock()
_UIDS_IN_USE: set[int] = set()


def _processes_of(uids: set[int]) -> list[int]:
    """Live (not zombie) processes whose real, effective or saved uid is one of ``uids``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        if fields.get("State", "").strip().startswith(("Z", "X")):
            continue
        if {int(u) for u in fields.get("Uid", "").split()[:3]} & uids:
            found.append(int(name))
    return found


def allocate_uids() -> list[int]:
    with _UID_LOCK:
        for _ in range(64):
            u = UID_BASE + 2 * secrets.randbelow(_UID_SPAN // 2)
            pair = {u, u + 1}
            if pair & _UIDS_IN_USE or any(_account_exists(x) for x in pair) or _processes_of(pair):
                continue
            _UIDS_IN_USE.update(pair)
            return [u, u + 1]
    raise OSError("found no free uid for the sandbox")


def _account_exists(uid: int) -> bool:
    import grp
    import pwd

    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return False


def release_uids(uids: list[int], *, sweep: bool) -> None:
    """Kill every process of ``uids`` (also ones that left the process group) and, with ``sweep``,
    remove what they left in the world-writable temporary directories; then free the uids."""
    try:
        if sweep:
            for _ in range(50):  # a forking program is bounded by RLIMIT_NPROC, so this converges
                pids = _processes_of(set(uids))
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.01)
            for top in {tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"}:
                _remove_owned(top, set(uids))
    finally:
        with _UID_LOCK:
            _UIDS_IN_USE.difference_update(uids)


def _remove_owned(top: str, uids: set[int]) -> None:
    """Remove the entries at the top of ``top`` that ``uids`` own (a full walk of a shared /tmp can
    take seconds; Landlock, where present, keeps the program from writing there at all)."""
    try:
        entries = list(os.scandir(top))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_uid not in uids:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
