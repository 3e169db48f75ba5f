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

:meth:`Sandbox.check` runs the completion apart from the tests: see ``_BOOTSTRAP`` for why nothing the
completion can reach decides the verdict. :attr:`Sandbox.signature` (isolation, user, limits) travels
with every pass@k number.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

try:  # POSIX only; the pass@k estimator below works everywhere
    import pwd
except ImportError:  # pragma: no cover - Windows
    pwd = None  # type: ignore[assignment]

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


# ---------------------------------------------------------------------------------------------
# pass@k

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` passed (Chen et al. 2021).

    ``1 - C(n-c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` so large ``n``
    neither overflows nor loses precision.

    >>> pass_at_k(10, 0, 1), pass_at_k(10, 10, 1), round(pass_at_k(10, 3, 1), 6)
    (0.0, 1.0, 0.3)
    """
    n, c, k = int(n), int(c), int(k)
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs n >= 1 samples and 0 <= c <= n passes; got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n; got k={k} with n={n} samples: draw more samples or lower k")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def estimate_pass_at_k(num_samples: int | Sequence[int], num_correct: Sequence[int], k: int) -> list[float]:
    """pass@k of each problem; ``num_samples`` is one count for all problems or one per problem.
    The benchmark number is the mean over problems."""
    counts = list(num_correct)
    ns = [int(num_samples)] * len(counts) if isinstance(num_samples, int) else list(num_samples)
    if len(ns) != len(counts):
        raise ValueError(f"{len(ns)} sample counts for {len(counts)} problems")
    return [pass_at_k(n, c, k) for n, c in zip(ns, counts, strict=True)]


def humaneval_program(problem: Mapping[str, Any], completion: str) -> str:
    """The program that checks one completion of a HumanEval-format problem: prompt + completion,
    the problem's ``test`` code, then ``check(entry_point)`` (as in openai/human-eval)."""
    for key in ("prompt", "test", "entry_point"):
        if key not in problem:
            raise ValueError(f"problem {problem.get('task_id', '?')!r} has no {key!r} field (HumanEval format needs "
                             "task_id, prompt, canonical_solution, test, entry_point)")
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def evaluate_pass_at_k(problems: Sequence[Mapping[str, Any]], completions: Sequence[Sequence[str]],
                       ks: Iterable[int] = (1,), *, sandbox: Sandbox | None = None,
                       allow_code_execution: bool | None = None, workers: int = 1) -> dict[str, Any]:
    """Run every completion of every HumanEval-format problem in the sandbox and estimate pass@k.

    ``completions[i]`` are the n samples for ``problems[i]``. Returns ``{"pass@k": mean over problems
    for each k <= n, "n": n, "passed": per-problem pass counts, "statuses": per-problem status lists,
    "signature": the sandbox's signature, "seconds": total}``. A program that loops, eats memory,
    or misbehaves is a failed sample; the evaluation always goes on. ``workers`` programs run at
    once (each in its own sandbox).

    >>> problem = {"task_id": "t/0", "prompt": "def add(a, b):\\n", "entry_point": "add",
    ...            "test": "def check(f):\\n    assert f(2, 3) == 5\\n", "canonical_solution": "    return a + b\\n"}
    >>> evaluate_pass_at_k([problem], [["    return a + b\\n", "    return a - b\\n"]], ks=[1],
    ...                    allow_code_execution=True)["pass@1"]
    0.5
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} lists of completions")
    if sandbox is None:
        sandbox = Sandbox(allow_code_execution=allow_code_execution)
    t0 = time.perf_counter()
    passed, statuses = [], []
    pairs = [(p, c) for p, samples in zip(problems, completions, strict=True) for c in samples]
    flat = iter(sandbox.check_many(pairs, workers=workers))
    for samples in completions:
        results = [next(flat) for _ in samples]
        statuses.append([r.status for r in results])
        passed.append(sum(r.passed for r in results))
    ns = [len(c) for c in completions]
    out: dict[str, Any] = {}
    for k in sorted({int(k) for k in ks}):
        if ns and all(n >= k for n in ns):
            out[f"pass@{k}"] = sum(estimate_pass_at_k(ns, passed, k)) / len(ns)
    out.update(n=min(ns) if ns else 0, passed=passed, statuses=statuses, signature=sandbox.signature,
               seconds=time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------------------------
# Execution results

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


# ---------------------------------------------------------------------------------------------
# Isolation modes

ISOLATIONS = ("auto", "namespace", "userns", "process", "unsafe-none")


class IsolationUnavailable(ValueError):
    """The isolation asked for (or, with ``"auto"``, any real isolation) is not available here."""


_PROBE_LOCK = threading.Lock()
_PROBED: dict[tuple[str, str], str | None] = {}
_NS_ARGS = ["--net", "--mount", "--pid", "--ipc", "--fork", "--mount-proc"]
_USERNS_ARGS = ["--user", "--map-root-user", *_NS_ARGS]
_SYS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Root modes run each program and its judge under two uids of their own, taken from a range no
# account uses, so nothing else shares their files, signals, ptrace or process-count limit, and
# everything they leave can be found by owner and removed.
_UID_BASE, _UID_SPAN = 0x70000000, 1 << 24
_UID_LOCK = threading.Lock()
_UIDS_IN_USE: set[int] = set()


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
    unshare = shutil.which("unshare", path=_SYS_PATH)
    if unshare is None:
        return "util-linux `unshare` is not installed"
    args = _NS_ARGS if mode == "namespace" else _USERNS_ARGS
    try:
        proc = subprocess.run([unshare, *args, "--", "/bin/sh", "-c", "mount --make-rprivate / && exit 0"],
                              capture_output=True, timeout=20, env={"PATH": _SYS_PATH})
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
        proc = subprocess.run([python, "-I", "-S", "-c", "import ctypes, json, resource"], user=_UID_BASE - 1,
                              group=_UID_BASE - 1, extra_groups=[], capture_output=True, timeout=30, cwd="/")
    except (OSError, subprocess.SubprocessError) as e:
        return f"an unprivileged uid cannot start {python}: {e}"
    if proc.returncode != 0:
        return (f"an unprivileged uid cannot start {python} (is it under a private directory such as /root?); "
                "pass python= an interpreter others can read, or use 'namespace'")
    return None


def _resolve(isolation: str, python: str) -> str:
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


def _allocate_uids() -> list[int]:
    with _UID_LOCK:
        for _ in range(64):
            u = _UID_BASE + 2 * secrets.randbelow(_UID_SPAN // 2)
            pair = {u, u + 1}
            if pair & _UIDS_IN_USE or any(_account_exists(x) for x in pair) or _processes_of(pair):
                continue
            _UIDS_IN_USE.update(pair)
            return [u, u + 1]
    raise OSError("found no free uid for the sandbox")


def _account_exists(uid: int) -> bool:
    import grp

    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return False


def _release_uids(uids: list[int], *, sweep: bool) -> None:
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


def _hide_plan(python: str, root: str, mode: str) -> list[list[Any]]:
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


# ---------------------------------------------------------------------------------------------
# The bootstrap

# Runs as ``python -I -S -c _BOOTSTRAP``; its settings and sources arrive as one JSON on stdin. The
# first process, the supervisor, is trusted: it sets up the mounts (namespace modes), then forks
#   - the *program* (untrusted): confined (own uid or no capabilities, no new privileges, limits, the
#     Python guard), it runs the source; for a check, prompt + completion, then it answers calls;
#   - the *judge* (check only; trusted code, the problem's prompt and tests): confined too, it runs
#     ``check(candidate)`` where ``candidate`` forwards each call to the program over a pipe and
#     gets plain data back (tagged JSON: no object of the program's, so no custom ``__eq__``).
# The supervisor waits for them and writes the verdict (exit statuses) to VERDICT, a pipe to the
# driver that both children close before running anything. Why nothing the program can reach
# decides the outcome: the program holds no fd of that pipe and no secret; it cannot ptrace, read the
# memory or fds of, or signal the judge or supervisor (another uid, or no capabilities against
# non-dumpable processes in a PID namespace), so the most it can do to them is kill or stop them,
# which gives "failed" or "timeout", never "passed". The judge decides, from values alone.
_BOOTSTRAP = r'''
import os, sys, json, struct, resource, signal, ctypes, builtins
cfg = json.loads(sys.stdin.buffer.read())
libc = ctypes.CDLL(None, use_errno=True)
MODE, W, VERDICT = cfg.get("mode"), cfg["work"], cfg.get("verdict_fd")

def check_rc(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), what)

def prctl(option, arg):
    L = ctypes.c_ulong
    check_rc(libc.prctl(ctypes.c_int(option), L(arg), L(0), L(0), L(0)), "prctl(%d)" % option)

def mnt(src, target, fstype, flags, data=None):
    enc = lambda x: None if x is None else x.encode()
    check_rc(libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), target)

def setup_mounts():
    # Private mounts; directories to hide get an empty tmpfs with only what must stay visible bound
    # back (the interpreter, this run's folder); then everything is read-only except the work dir.
    import re
    RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
    mnt(None, "/", None, REC | PRIVATE)
    for cover, keep in cfg["hide"]:
        fds = [(os.open(p, os.O_PATH), p) for p in keep]
        mnt("tp-sandbox", cover, "tmpfs", NOSUID | NODEV, "mode=0755,size=64k")
        for fd, p in fds:
            os.makedirs(p, exist_ok=True)
            mnt("/proc/self/fd/%d" % fd, p, None, BIND | REC)
            os.close(fd)
    mnt(W, W, None, BIND)
    with open("/proc/self/mounts") as fh:
        mounts = [line.split() for line in fh]
    for fields in reversed(mounts):
        target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        opts = fields[3].split(",")
        if target == W or "ro" in opts:
            continue
        keep = (NOSUID if "nosuid" in opts else 0) | (NODEV if "nodev" in opts else 0) | (NOEXEC if "noexec" in opts else 0)
        try:
            mnt(None, target, None, REMOUNT | BIND | RDONLY | keep)
        except OSError:
            pass  # shadowed or special mounts; the checks below decide
    for path in ("/", os.path.dirname(W)):
        if os.statvfs(path).f_flag & os.ST_RDONLY == 0:
            raise OSError("could not make %s read-only" % path)

def limits():
    for name, value in (("RLIMIT_AS", cfg["memory"]), ("RLIMIT_FSIZE", cfg["fsize"]), ("RLIMIT_CORE", 0),
                        ("RLIMIT_NOFILE", cfg["nofile"]), ("RLIMIT_NPROC", cfg["nproc"])):
        if value is not None:
            resource.setrlimit(getattr(resource, name), (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu"], cfg["cpu"] + 1))

def drop_caps():
    # User-namespace root gives up every capability for good: bounding set emptied, root's
    # automatic capabilities switched off and locked, then all sets cleared.
    with open("/proc/sys/kernel/cap_last_cap") as fh:
        last = int(fh.read())
    for cap in range(last + 1):
        prctl(24, cap)  # PR_CAPBSET_DROP
    prctl(28, 0x1 | 0x2 | 0x40 | 0x80)  # PR_SET_SECUREBITS: NOROOT(+LOCKED), NO_CAP_AMBIENT_RAISE(+LOCKED)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    check_rc(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")

def landlock(abi, writable):
    # Without a mount namespace, the kernel's Landlock is what keeps an own uid from writing to
    # world-writable places (/tmp, /dev/shm) and from TCP; reads stay governed by file permissions.
    fs = (1 << 1) | (1 << 4) | (1 << 5) | (0x7f << 6)  # WRITE_FILE, REMOVE_DIR/FILE, MAKE_CHAR..MAKE_SYM
    fs |= (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)  # REFER, TRUNCATE
    net = 3 if abi >= 4 else 0  # BIND_TCP, CONNECT_TCP: handled with no rule, so denied
    scoped = 3 if abi >= 6 else 0  # abstract unix sockets and signals only within the domain
    attr = struct.pack("<QQQ", fs, net, scoped)[: 24 if abi >= 6 else 16 if abi >= 4 else 8]
    syscall = libc.syscall
    ruleset = syscall(444, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    rules = [("/dev/null", 1 << 1)] + ([(writable, fs)] if writable else [])
    for path, access in rules:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = struct.pack("<Qi", access, fd)  # struct landlock_path_beneath_attr (packed)
        check_rc(syscall(445, ruleset, 1, rule, 0), "landlock_add_rule " + path)
        os.close(fd)
    check_rc(syscall(446, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)

def confine(role):
    os.chdir(W if role == "program" else "/")
    limits()
    if cfg["uids"]:
        uid = cfg["uids"][role]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif MODE == "userns":
        drop_caps()
    prctl(38, 1)  # PR_SET_NO_NEW_PRIVS: no setuid binary or file capability can give privileges back
    prctl(4, 0)   # PR_SET_DUMPABLE 0: not ptrace-able, /proc/<pid>/mem and fd closed to same-uid peers
    if cfg.get("landlock"):
        landlock(cfg["landlock"], W if role == "program" else None)
    if MODE != "unsafe-none":
        with open("/proc/self/status") as fh:
            caps = [l.split()[1] for l in fh if l.startswith(("CapEff", "CapPrm", "CapBnd", "CapAmb"))]
        if cfg["uids"] is None and any(int(c, 16) for c in caps):
            raise OSError("capabilities left: %s" % caps)
        if os.geteuid() == 0 and cfg["uids"]:
            raise OSError("still root")

class ProgramEnded(BaseException):
    """Not an Exception: a test's ``except Exception`` cannot swallow it."""

def send(fd, obj):
    data = json.dumps(obj).encode()
    data = struct.pack("<Q", len(data)) + data
    while data:
        data = data[os.write(fd, data):]

def read_exact(fd, n):
    chunks = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)

def recv(fd):
    head = read_exact(fd, 8)
    if head is None:
        return None
    (n,) = struct.unpack("<Q", head)
    if n > cfg["max_message"]:
        raise ProgramEnded("a message of %d bytes from the program (limit %d)" % (n, cfg["max_message"]))
    data = read_exact(fd, n)
    return None if data is None else json.loads(data)

SCALAR = (bool, int, float, str)
TAGS = {list: "l", tuple: "t", set: "s", frozenset: "f"}
UNTAG = {"l": list, "t": tuple, "s": set, "f": frozenset}

def encode(v, depth=0):
    t = type(v)  # exact types: a subclass could carry its own __eq__
    if depth > 100:
        raise TypeError("value nested too deep to leave the sandbox")
    if v is None or t in SCALAR:
        return v
    if t in TAGS:
        return {TAGS[t]: [encode(x, depth + 1) for x in v]}
    if t is dict:
        return {"d": [[encode(k, depth + 1), encode(x, depth + 1)] for k, x in v.items()]}
    if t is bytes:
        return {"b": v.hex()}
    if t is complex:
        return {"c": [v.real, v.imag]}
    raise TypeError("a value of type %s cannot leave the sandbox (plain data only)" % t.__name__)

def decode(x):
    t = type(x)
    if x is None or t in SCALAR:
        return x
    if t is dict and len(x) == 1:
        (tag, body), = x.items()
        if tag in UNTAG and type(body) is list:
            return UNTAG[tag](decode(i) for i in body)
        if tag == "d" and type(body) is list and all(type(p) is list and len(p) == 2 for p in body):
            return {decode(k): decode(v) for k, v in body}
        if tag == "b" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "c" and type(body) is list and len(body) == 2 and all(type(n) in (int, float) for n in body):
            return complex(*body)
    raise ValueError("malformed value")

def serve(g, rfd, wfd):
    while True:
        msg = recv(rfd)
        if msg is None:
            return
        try:
            fn = g[cfg["entry_point"]]
            reply = {"v": encode(fn(*decode(msg["a"]), **decode(msg["k"])))}
        except Exception as e:
            reply = {"e": [type(e).__name__, str(e)[:2000]]}
        send(wfd, reply)

def make_candidate(rfd, wfd):
    def candidate(*args, **kwargs):
        try:
            send(wfd, {"a": encode(list(args)), "k": encode(kwargs)})
            reply = recv(rfd)
        except OSError as e:
            raise ProgramEnded("the program under test ended (%s)" % e)
        if reply is None:
            raise ProgramEnded("the program under test ended before answering")
        if type(reply) is dict and "e" in reply and [type(x) for x in reply["e"]] == [str, str]:
            name, text = reply["e"]
            cls = getattr(builtins, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                raise cls(text)
            raise RuntimeError("%s: %s" % (name, text))
        try:
            return decode(reply["v"])
        except (KeyError, TypeError, ValueError, RecursionError) as e:
            raise ProgramEnded("the program under test answered something that is not plain data (%r)" % (e,))
    candidate.__name__ = cfg["entry_point"]
    return candidate

def run_judge(rfd, wfd):
    g = {"__name__": "__main__", "__builtins__": builtins}
    prompt, code = cfg["prompt"], None
    for src in (prompt, prompt.rstrip() + "\n    pass\n"):  # a prompt may end at "def f(...):"
        try:
            code = compile(src, "<prompt>", "exec")
            break
        except SyntaxError:
            pass
    if code is not None:
        exec(code, g)
    candidate = make_candidate(rfd, wfd)
    g[cfg["entry_point"]] = candidate
    exec(compile(cfg["test"], "<test>", "exec"), g)
    g["check"](candidate)

def exec_program(pipes):
    # A fresh interpreter (execv): the program's address space never held the tests, so it cannot
    # read the expected answers. Its own settings reach it as stdin, from a memfd.
    mine = {k: cfg[k] for k in ("work", "guard", "max_message", "program", "entry_point") if k in cfg}
    fd = os.memfd_create("tp-sandbox-program")
    os.write(fd, json.dumps(dict(mine, stage="program", pipes=list(pipes))).encode("utf-8", "surrogatepass"))
    os.lseek(fd, 0, os.SEEK_SET)
    os.dup2(fd, 0)
    os.close(fd)
    for p in pipes:
        os.set_inheritable(p, True)
    return lambda: os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", cfg["bootstrap"]])

def run_program():
    for fd in cfg["pipes"]:  # what the program execs does not get them
        os.set_inheritable(fd, False)
    if cfg["guard"]:
        install_guard()
    g = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(cfg["program"], "<program>", "exec"), g)
    if cfg["pipes"]:
        serve(g, *cfg["pipes"])

def install_guard():
    # Defence in depth only (an audit hook is no boundary: the program can switch it off); the OS
    # confinement above is what holds.
    WR = os.path.realpath(W)
    ME = os.getpid()
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    BLOCK = ("socket.", "subprocess.", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec",
             "os.system", "os.killpg", "pty.", "ctypes.", "os.setuid", "os.setgid", "os.chroot", "os.setsid",
             "os.setpgid", "os.setpgrp", "_posixsubprocess", "os.startfile", "os.putenv", "webbrowser.")
    busy = [False]
    def inside(p):
        if isinstance(p, int):
            return True
        p = os.path.realpath(os.fsdecode(p))
        return p == WR or p.startswith(WR + os.sep) or p == "/dev/null"
    def deny(what):
        raise PermissionError("sandbox: " + what + " is not allowed")
    def guard(event, args):
        if busy[0]:
            return
        busy[0] = True
        try:
            if event.startswith(BLOCK):
                deny(event)
            if event == "os.kill" and args and args[0] != ME:
                deny("sending a signal to another process")
            if event == "open" and args:
                path, mode, flags = (list(args) + [None, None])[:3]
                writes = (any(ch in mode for ch in "wax+") if isinstance(mode, str)
                          else isinstance(flags, int) and bool(flags & WRITE))
                if writes and not inside(path):
                    deny("writing outside the working directory (%r)" % (path,))
        finally:
            busy[0] = False
    sys.addaudithook(guard)

def child(role, keep, prepare):
    pid = os.fork()
    if pid:
        return pid
    try:
        for fd in map(int, os.listdir("/proc/self/fd")):
            if fd > 2 and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        body = prepare()
        confine(role)
    except BaseException as e:
        os.write(2, ("sandbox: %s setup failed: %r\n" % (role, e)).encode())
        os._exit(97)
    os._exit(run_user_code(body))

def run_user_code(body):
    code = 1
    try:
        body()
        code = 0
    except SystemExit as e:
        if isinstance(e.code, int) or e.code is None:
            code = e.code or 0
        else:
            sys.stderr.write("%s\n" % (e.code,))
    except BaseException:
        import traceback
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    return code & 0xff if code >= 0 else 1

def status(s):
    if s is None:
        return None
    return ["signal", os.WTERMSIG(s)] if os.WIFSIGNALED(s) else ["exit", os.WEXITSTATUS(s)]

def supervise():
    if cfg["role"] == "check":
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        prog = child("program", {req_r, resp_w}, lambda: exec_program((req_r, resp_w)))
        judge = child("judge", {resp_r, req_w}, lambda: (lambda: run_judge(resp_r, req_w)))
        for fd in (req_r, req_w, resp_r, resp_w):
            os.close(fd)
        judged = os.waitpid(judge, 0)[1]
        pid, ps = os.waitpid(prog, os.WNOHANG)
        if pid == 0:  # still serving: its end is ours to decide, not a status of its own
            os.kill(prog, signal.SIGKILL)
            os.waitpid(prog, 0)
            ps = None
        return {"judge": status(judged), "program": status(ps)}
    prog = child("program", set(), lambda: exec_program(()))
    return {"program": status(os.waitpid(prog, 0)[1])}

if cfg.get("stage") == "program":
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os._exit(run_user_code(run_program))
try:
    if cfg["hide"] is not None:
        setup_mounts()
    prctl(4, 0)
except BaseException as e:
    sys.stderr.write("sandbox: setup failed: %r\n" % (e,))
    sys.exit(97)
verdict = supervise()
os.write(VERDICT, json.dumps(verdict).encode())
'''

_CLEAN_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
}


@dataclass
class Sandbox:
    """Runs untrusted Python programs isolated and with limits; see the module docstring.

    ``allow_code_execution``: the opt-in (``None`` reads ``TRANSFER_PROBE_ALLOW_CODE_EXECUTION``).
    ``timeout`` wall-clock seconds and ``cpu_seconds`` of CPU per program; ``memory_mb`` of address
    space; ``max_output_bytes`` per stream (also the largest file it may write); ``max_processes``
    (``RLIMIT_NPROC``); ``isolation``: ``"auto"`` (``"namespace"`` as root, else ``"userns"``; refuses
    when neither is available), ``"namespace"``, ``"userns"``, ``"process"`` (root, no namespaces:
    own uids, no network isolation) or ``"unsafe-none"`` (no isolation but limits: an explicit
    opt-in). ``python_guard=False`` turns off the audit-hook guard, an extra layer that is no boundary.

    >>> sb = Sandbox(allow_code_execution=True, timeout=3, cpu_seconds=1)
    >>> sb.run("while True: pass").status in ("cpu_limit", "timeout")   # timeout on a busy machine
    True
    """

    allow_code_execution: bool | None = None
    timeout: float = 10.0
    cpu_seconds: int | None = None  # default: ceil(timeout)
    memory_mb: int = 1024
    max_output_bytes: int = 1 << 20
    max_processes: int = 32
    max_open_files: int = 64
    isolation: str = "auto"
    python_guard: bool = True
    python: str = field(default_factory=lambda: sys.executable)

    def __post_init__(self) -> None:
        _require_opt_in(self.allow_code_execution, "The code sandbox (pass@k)")
        if os.name != "posix" or pwd is None:
            raise RuntimeError(f"the code sandbox needs a POSIX system (Linux); this is {sys.platform}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout!r}")
        if self.cpu_seconds is None:
            self.cpu_seconds = max(1, math.ceil(self.timeout))
        if int(self.cpu_seconds) < 1:
            raise ValueError(f"cpu_seconds must be >= 1, got {self.cpu_seconds!r}")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb={self.memory_mb} is too small to start Python; use at least 64")
        if self.max_output_bytes < 1024:
            raise ValueError(f"max_output_bytes={self.max_output_bytes} is too small; use at least 1024")
        if self.max_processes < 1:
            raise ValueError(f"max_processes must be >= 1, got {self.max_processes!r}")
        self._mode = _resolve(self.isolation, self.python)

    @property
    def mode(self) -> str:
        """The isolation in force: ``namespace``, ``userns``, ``process`` or ``unsafe-none``."""
        return self._mode

    @property
    def user(self) -> str:
        """Who the programs run as: ``own-uid`` (an unprivileged uid per run), ``userns-nocaps`` (the
        calling user, mapped to root of a user namespace with every capability dropped), or, with
        ``unsafe-none``, ``self`` or ``root``."""
        if self._mode in ("namespace", "process"):
            return "own-uid"
        if self._mode == "userns":
            return "userns-nocaps"
        return "root" if os.geteuid() == 0 else "self"

    @property
    def signature(self) -> str:
        """Every setting that can change a pass@k number, in sacrebleu's signature style."""
        mode = self.mode
        if mode == "process":  # what Landlock adds here: writes confined (1+), no TCP (4+)
            abi = landlock_abi()
            mode += "+landlock-fs-net" if abi >= 4 else "+landlock-fs" if abi >= 1 else ""
        return (f"sandbox:{mode}|user:{self.user}|guard:{'yes' if self.python_guard else 'no'}"
                f"|timeout:{self.timeout:g}|cpu:{self.cpu_seconds}|mem:{self.memory_mb}M"
                f"|out:{self.max_output_bytes}|python:{sys.version_info.major}.{sys.version_info.minor}")

    # -- running --------------------------------------------------------------------------------
    def run(self, source: str) -> ExecutionResult:
        """Run one Python program; ``passed`` when it exits with status 0. Never raises for anything
        the program does. The program is wholly untrusted, so it decides its own exit status: to
        judge code against tests, use :meth:`check`, where the program decides nothing."""
        return self._execute({"role": "run", "program": source})

    def check(self, problem: Mapping[str, Any], completion: str) -> ExecutionResult:
        """Run a HumanEval-format problem's tests against one completion: ``passed`` only when the
        problem's ``check(candidate)`` returned in the judge process, the completion running apart."""
        humaneval_program(problem, completion)  # the field checks
        return self._execute({"role": "check", "program": f"{problem['prompt']}{completion}\n",
                              "prompt": problem["prompt"], "test": problem["test"],
                              "entry_point": problem["entry_point"]})

    def run_many(self, sources: Iterable[str], *, workers: int = 1) -> list[ExecutionResult]:
        """Run several programs, ``workers`` at a time (each in its own sandbox); results in order."""
        return _in_pool(self.run, list(sources), workers)

    def check_many(self, pairs: Iterable[tuple[Mapping[str, Any], str]], *, workers: int = 1) -> list[ExecutionResult]:
        """:meth:`check` for ``(problem, completion)`` pairs, ``workers`` at a time; results in order."""
        return _in_pool(lambda pc: self.check(*pc), list(pairs), workers)

    def _execute(self, job: dict[str, Any]) -> ExecutionResult:
        t0 = time.perf_counter()
        root = tempfile.mkdtemp(prefix="tp-sandbox-")
        uids = _allocate_uids() if self._mode in ("namespace", "process") else None
        try:
            return self._run_in(root, job, uids, t0)
        except (OSError, subprocess.SubprocessError) as e:
            return ExecutionResult("sandbox_error", None, "", "", time.perf_counter() - t0, f"{type(e).__name__}: {e}")
        finally:
            if uids:
                _release_uids(uids, sweep=self._mode == "process")
            shutil.rmtree(root, ignore_errors=True)

    def _config(self, root: str, work: str, uids: list[int] | None, verdict_fd: int) -> dict[str, Any]:
        ns = self._mode in ("namespace", "userns")
        # RLIMIT_NPROC counts the processes of a uid (per user namespace): meaningful for a uid of
        # the run's own, or inside a user namespace (+3: the supervisor, the judge, one spare).
        nproc = {"namespace": self.max_processes, "process": self.max_processes,
                 "userns": self.max_processes + 3}.get(self._mode)
        return {
            "mode": self._mode, "work": work, "verdict_fd": verdict_fd, "guard": bool(self.python_guard),
            "uids": {"program": uids[0], "judge": uids[1]} if uids else None,
            "memory": int(self.memory_mb) << 20, "cpu": int(self.cpu_seconds), "fsize": int(self.max_output_bytes),
            "nofile": int(self.max_open_files), "nproc": nproc, "max_message": 16 << 20,
            "hide": _hide_plan(self.python, root, self._mode) if ns else None, "bootstrap": _BOOTSTRAP,
            "landlock": landlock_abi() if self._mode == "process" else 0,
        }

    def _command(self) -> list[str]:
        py = [self.python, "-I", "-S", "-c", _BOOTSTRAP]
        if self._mode not in ("namespace", "userns"):
            return py
        args = _NS_ARGS if self._mode == "namespace" else _USERNS_ARGS
        # The supervisor is PID 1 of the new namespaces: signals from inside cannot reach it, and when
        # it ends the kernel kills everything left there. (No shell in between: it would hold the
        # verdict pipe, dumpable, under the program's uid in a user namespace.)
        return [shutil.which("unshare", path=_SYS_PATH) or "unshare", *args, "--", *py]

    def _run_in(self, root: str, job: dict[str, Any], uids: list[int] | None, t0: float) -> ExecutionResult:
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        os.chmod(root, 0o711)  # traversable, not listable: the captured output next to it stays private
        if uids:
            os.chown(work, uids[0], uids[0])
        verdict_r, verdict_w = os.pipe()
        try:
            cfg = dict(self._config(root, work, uids, verdict_w), **job)
            env = dict(_CLEAN_ENV, HOME=work, TMPDIR=work, PATH=_SYS_PATH)
            out_path, err_path = os.path.join(root, "stdout"), os.path.join(root, "stderr")
            with open(out_path, "wb", opener=_private) as out, open(err_path, "wb", opener=_private) as err:
                proc = subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=out, stderr=err, env=env,
                                        cwd=work, start_new_session=True, close_fds=True, pass_fds=(verdict_w,))
                os.close(verdict_w)
                verdict_w = -1
                timed_out = False
                try:
                    proc.communicate(json.dumps(cfg).encode("utf-8", "surrogatepass"), timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                finally:
                    _kill_group(proc.pid)  # also after a normal exit: nothing of the run outlives it
                    proc.wait()
            verdict = _read_verdict(verdict_r)
        finally:
            os.close(verdict_r)
            if verdict_w >= 0:
                os.close(verdict_w)
        stdout = _read_bounded(out_path, self.max_output_bytes)
        stderr = _read_bounded(err_path, self.max_output_bytes)
        status, error = self._classify(job["role"], verdict, proc.returncode, timed_out, stdout, stderr)
        program = verdict.get("program") if verdict else None
        code = None if not program else program[1] if program[0] == "exit" else -program[1]
        return ExecutionResult(status, code, stdout, stderr, time.perf_counter() - t0, error)

    def _classify(self, role: str, verdict: dict | None, rc: int | None, timed_out: bool, stdout: str,
                  stderr: str) -> tuple[str, str]:
        lines = stderr.strip().splitlines()
        last = lines[-1] if lines else ""
        if timed_out:
            return "timeout", f"wall-clock limit of {self.timeout:g} s"
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
            return "cpu_limit", f"CPU-time limit of {self.cpu_seconds} s"
        if signal.SIGXFSZ in sigs or max(len(stdout), len(stderr)) >= self.max_output_bytes:
            return "output_limit", f"output or file larger than {self.max_output_bytes} bytes"
        if any(ln.startswith("MemoryError") for ln in lines):
            return "memory_limit", f"address-space limit of {self.memory_mb} MiB"
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


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _in_pool(fn, items: list, workers: int) -> list:
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="tp-sandbox") as pool:
        return list(pool.map(fn, items))


def _read_verdict(fd: int) -> dict | None:
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


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_bounded(path: str, limit: int) -> str:
    with open(path, "rb") as fh:
        data = fh.read(limit + 64)
    return data.decode("utf-8", "replace")
