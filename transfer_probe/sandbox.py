"""Running untrusted, model-generated code for pass@k, and the pass@k estimator.

Model-generated code is untrusted. Nothing here runs it unless the user opted in, with
``allow_code_execution=True`` or the environment variable ``TRANSFER_PROBE_ALLOW_CODE_EXECUTION=1``;
otherwise :class:`CodeExecutionNotAllowed` says how to opt in.

    from transfer_probe.sandbox import Sandbox, pass_at_k

    sandbox = Sandbox(allow_code_execution=True, timeout=5, memory_mb=512)
    result = sandbox.run("assert sum([1, 2]) == 3")
    result.passed, result.status, result.seconds      # (True, 'passed', 0.08)
    pass_at_k(n=20, c=3, k=5)                         # 0.6009...

Every program runs in its own process (a new session and process group, killed as a group) with:

- a wall-clock timeout (the parent kills the group) and a CPU-time limit (``RLIMIT_CPU``);
- an address-space limit (``RLIMIT_AS``), a file-size limit that also bounds its output
  (``RLIMIT_FSIZE``), no core dumps, few open files;
- a fresh temporary working directory, removed afterwards, as ``HOME`` and ``TMPDIR``;
- a cleaned environment (no variables of the parent: no tokens, no keys) and ``python -I -S``;
- a Python-level guard (an audit hook, which cannot be removed once installed) that refuses
  sockets, subprocesses and ``fork``, signals to other processes, ``ctypes``, writes outside the
  working directory, and reading other processes' ``/proc`` entries.

Where possible (running as root with ``unshare`` from util-linux, the ``"namespace"`` isolation) the
process also gets operating-system isolation that does not rely on Python: new network (no
interface but a downed loopback), PID, IPC and mount namespaces, every mount remounted read-only
except the working directory, and the user ``nobody`` with a process-count limit (``RLIMIT_NPROC``)
so a fork loop is bounded. Elsewhere the ``"process"`` isolation keeps the limits and the
Python-level guard, and runs as ``nobody`` when started as root and ``nobody`` can read the
interpreter (else as the calling user: then only the limits and the guard stand between the program
and the machine; :attr:`Sandbox.user` says which). ``Sandbox.isolation`` says which one is in force, and
:attr:`Sandbox.signature` travels with every pass@k number.
"""

from __future__ import annotations

import json
import math
import os
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
    programs = [humaneval_program(p, c) for p, samples in zip(problems, completions, strict=True) for c in samples]
    flat = iter(sandbox.run_many(programs, workers=workers))
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
    """What happened to one program: ``passed`` only if it ran to the end and exited 0.

    ``status`` is one of ``passed``, ``failed`` (an exception or non-zero exit; ``error`` has the
    last line of the traceback), ``timeout`` (wall clock), ``cpu_limit``, ``memory_limit``,
    ``output_limit``, ``killed`` (another signal), ``sandbox_error`` (the sandbox itself failed).
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
# Isolation detection

_NS_LOCK = threading.Lock()
_NS_AVAILABLE: bool | None = None
_UNSHARE_ARGS = ["--net", "--mount", "--pid", "--ipc", "--fork", "--mount-proc"]


def namespace_isolation_available() -> bool:
    """True when this process can give sandboxed programs their own network, PID, IPC and mount
    namespaces (root, ``unshare`` present and permitted, a ``nobody`` user). Probed once."""
    global _NS_AVAILABLE
    with _NS_LOCK:
        if _NS_AVAILABLE is None:
            _NS_AVAILABLE = _probe_namespaces()
        return _NS_AVAILABLE


def _probe_namespaces() -> bool:
    if sys.platform != "linux" or pwd is None or os.geteuid() != 0:
        return False
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("mount") is None:
        return False
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return False
    try:
        proc = subprocess.run([unshare, *_UNSHARE_ARGS, "--", "/bin/sh", "-c", "mount --make-rprivate / && exit 0"],
                              capture_output=True, timeout=20, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


_NOBODY_OK: dict[str, bool] = {}


def _nobody_can_run(python: str) -> bool:
    """Whether ``nobody`` can start this interpreter and import the standard library (without
    namespaces there is no way to expose an interpreter under a private directory)."""
    with _NS_LOCK:
        if python not in _NOBODY_OK:
            try:
                pw = pwd.getpwnam("nobody")
                proc = subprocess.run([python, "-I", "-S", "-c", "import socket, traceback"], user=pw.pw_uid,
                                      group=pw.pw_gid, extra_groups=[], capture_output=True, timeout=30, cwd="/")
                _NOBODY_OK[python] = proc.returncode == 0
            except (KeyError, OSError, subprocess.SubprocessError):
                _NOBODY_OK[python] = False
        return _NOBODY_OK[python]


# PID 1 of the new namespaces: sh, which runs the Python bootstrap as its child. sh stays PID 1
# (no exec) so the kernel delivers SIGXCPU to Python normally (a namespace's init ignores it), and
# when sh exits every process left in the namespace is killed.
_NS_SCRIPT = '"$@"; exit $?'


def _interpreter_paths(python: str) -> list[str]:
    paths = {os.path.dirname(os.path.realpath(python)), sys.base_prefix, sys.prefix, os.path.dirname(python)}
    return sorted(os.path.realpath(p) for p in paths)


def _expose_plan(python: str) -> list[list[Any]]:
    """``[[ancestor, [children...]], ...]``: directories others cannot traverse on the way to the
    interpreter (``/root`` for ``/root/.pyenv/...``), with the children the interpreter needs.

    In the sandbox's private mount namespace each such directory is covered with an empty tmpfs
    holding only bind mounts of those children, so ``nobody`` can read the standard library and
    nothing else of that directory.
    """
    blocked: dict[str, set[str]] = {}
    for path in _interpreter_paths(python):
        parts = path.strip(os.sep).split(os.sep)
        for i in range(1, len(parts)):
            ancestor = os.sep + os.sep.join(parts[:i])
            if not os.stat(ancestor).st_mode & 0o001:
                blocked.setdefault(ancestor, set()).add(os.sep + os.sep.join(parts[: i + 1]))
                break
    return [[a, sorted(c)] for a, c in sorted(blocked.items())]


# The Python bootstrap of every sandboxed program (``python -I -S -c``). Reads its settings and the
# program from stdin, applies limits, drops privileges, installs the guard, runs the program, and
# prints a per-run random marker only if the program finished (so an early ``os._exit(0)`` fails).
_BOOTSTRAP = r"""
import os, sys, resource, json
cfg = json.loads(sys.stdin.readline())
source = sys.stdin.read()
if cfg["ns"]:
    # Inside fresh mount/network/PID namespaces, still root: direct mount(2) calls (no process per
    # mount) make every mount read-only except the working directory, then privileges are dropped.
    import ctypes, re
    libc = ctypes.CDLL(None, use_errno=True)
    RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
    def mnt(src, target, fstype, flags, data=None):
        enc = lambda x: None if x is None else x.encode()
        if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), target)
    try:
        W, stage = cfg["work"], cfg["ns"]["stage"]
        mnt(None, "/", None, REC | PRIVATE)
        mnt(W, W, None, BIND)
        for n, (ancestor, children) in enumerate(cfg["ns"]["expose"]):
            staged = []
            for j, child in enumerate(children):
                st = os.path.join(stage, "%d_%d" % (n, j))
                os.makedirs(st)
                mnt(child, st, None, BIND)
                staged.append((st, child))
            mnt("tp-sandbox", ancestor, "tmpfs", 0, "mode=0755,size=64k")
            for st, child in staged:
                os.makedirs(child, exist_ok=True)
                mnt(st, child, None, BIND)
        with open("/proc/self/mounts") as fh:
            mounts = [line.split() for line in fh]
        for fields in mounts:
            target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
            opts = fields[3].split(",")
            if target == W or "ro" in opts:
                continue
            keep = (NOSUID if "nosuid" in opts else 0) | (NODEV if "nodev" in opts else 0) | (NOEXEC if "noexec" in opts else 0)
            try:
                mnt(None, target, None, REMOUNT | BIND | RDONLY | keep)
            except OSError:
                pass  # hidden or special mounts; / itself is checked below
        try:
            open("/.tp_sandbox_rw_check", "w").close()
        except OSError:
            pass
        else:
            os.remove("/.tp_sandbox_rw_check")
            raise OSError("could not make / read-only")
    except OSError as e:
        sys.stderr.write("sandbox: namespace setup failed: %s\n" % (e,))
        sys.exit(97)
    del libc, mnt
def _limit(name, value):
    if value is not None:
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError, AttributeError):
            if sys.platform.startswith("linux"):
                raise  # on Linux every limit must hold; macOS does not enforce RLIMIT_AS

_limit("RLIMIT_AS", cfg["memory"])
resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu"], cfg["cpu"] + 1))
_limit("RLIMIT_FSIZE", cfg["fsize"])
_limit("RLIMIT_CORE", 0)
_limit("RLIMIT_NOFILE", cfg["nofile"])
_limit("RLIMIT_NPROC", cfg["nproc"])
os.chdir(cfg["work"])
if cfg["uid"] is not None:
    os.setgroups([])
    os.setgid(cfg["gid"])
    os.setuid(cfg["uid"])
out = os.dup(1)
nonce = cfg["nonce"].encode()
if cfg["guard"]:
    W = os.path.realpath(cfg["work"])
    ME = str(os.getpid())
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    BLOCK = ("socket.", "subprocess.", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec",
             "os.system", "os.killpg", "pty.", "ctypes.", "os.setuid", "os.setgid", "os.chroot", "os.setsid",
             "os.setpgid", "os.setpgrp", "_posixsubprocess", "os.startfile", "os.putenv", "webbrowser.")
    PATH_EVENTS = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1,
                   "os.truncate": 1, "os.utime": 1, "os.rename": 2, "os.link": 2, "os.symlink": 2,
                   "shutil.rmtree": 1, "shutil.copyfile": 2, "shutil.copytree": 2, "shutil.move": 2,
                   "os.mkfifo": 1, "os.mknod": 1, "os.chflags": 1, "os.lchflags": 1}
    busy = [False]
    def inside(p):
        if isinstance(p, int):
            return True
        p = os.path.realpath(os.fsdecode(p))
        return p == W or p.startswith(W + os.sep) or p == "/dev/null"
    def deny(what):
        raise PermissionError("sandbox: " + what + " is not allowed")
    def guard(event, args):
        if busy[0]:
            return
        busy[0] = True
        try:
            if event.startswith(BLOCK):
                deny(event)
            if event == "os.kill" and args and args[0] != int(ME):
                deny("sending a signal to another process")
            if event == "open" and args:
                path, mode, flags = (list(args) + [None, None])[:3]
                writes = (any(ch in mode for ch in "wax+") if isinstance(mode, str)
                          else isinstance(flags, int) and bool(flags & WRITE))
                if writes and not inside(path):
                    deny("writing outside the working directory (%r)" % (path,))
                if not isinstance(path, int):
                    parts = os.path.realpath(os.fsdecode(path)).split(os.sep)
                    if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != ME:
                        deny("reading another process's /proc entry")
            n = PATH_EVENTS.get(event)
            if n:
                for p in args[:n]:
                    if p is not None and not inside(p):
                        deny("%s outside the working directory (%r)" % (event, p))
        finally:
            busy[0] = False
    sys.addaudithook(guard)
del cfg
code = compile(source, "<program>", "exec")
del source
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
sys.stdout.flush()
sys.stderr.flush()
os.write(out, b"\n" + nonce + b"\n")
"""

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
    """Runs untrusted Python programs with limits; see the module docstring for the isolation.

    ``allow_code_execution``: the opt-in (``None`` reads ``TRANSFER_PROBE_ALLOW_CODE_EXECUTION``).
    ``timeout`` wall-clock seconds and ``cpu_seconds`` of CPU per program; ``memory_mb`` of address
    space; ``max_output_bytes`` per stream (also the largest file it may write); ``max_processes``
    for ``RLIMIT_NPROC`` under namespace isolation; ``isolation`` ``"auto"`` (namespace when
    available, else process), ``"namespace"`` (fail if unavailable) or ``"process"``;
    ``python_guard=False`` turns off the audit-hook guard (only for testing the OS layer).

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
            raise RuntimeError("the code sandbox needs a POSIX system (Linux, or macOS with fewer limits); "
                               f"this is {sys.platform}")
        if self.isolation not in ("auto", "namespace", "process"):
            raise ValueError(f"isolation must be 'auto', 'namespace' or 'process', not {self.isolation!r}")
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
        if self.isolation == "namespace" and not namespace_isolation_available():
            raise RuntimeError(
                "isolation='namespace' needs root, util-linux `unshare` with network/PID/mount namespaces "
                "permitted, and a 'nobody' user; not available here. Use isolation='auto' or 'process'."
            )
        self._namespaces = self.isolation != "process" and namespace_isolation_available()

    @property
    def mode(self) -> str:
        """The isolation in force: ``"namespace"`` or ``"process"``."""
        return "namespace" if self._namespaces else "process"

    @property
    def user(self) -> str:
        """Who the programs run as: ``nobody``, ``root`` (root without namespaces, when ``nobody``
        cannot read the interpreter: only the limits and the Python guard apply), or ``self``."""
        if os.geteuid() != 0:
            return "self"
        return "nobody" if self._namespaces or _nobody_can_run(self.python) else "root"

    @property
    def signature(self) -> str:
        """Every setting that can change a pass@k number, in sacrebleu's signature style."""
        return (f"sandbox:{self.mode}|user:{self.user}|guard:{'yes' if self.python_guard else 'no'}|timeout:{self.timeout:g}"
                f"|cpu:{self.cpu_seconds}|mem:{self.memory_mb}M|out:{self.max_output_bytes}"
                f"|python:{sys.version_info.major}.{sys.version_info.minor}")

    # -- running --------------------------------------------------------------------------------
    def run(self, source: str) -> ExecutionResult:
        """Run one Python program; never raises for anything the program does."""
        t0 = time.perf_counter()
        root = tempfile.mkdtemp(prefix="tp-sandbox-")
        try:
            return self._run_in(root, source, t0)
        except (OSError, subprocess.SubprocessError) as e:
            return ExecutionResult("sandbox_error", None, "", "", time.perf_counter() - t0, f"{type(e).__name__}: {e}")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def run_many(self, sources: Iterable[str], *, workers: int = 1) -> list[ExecutionResult]:
        """Run several programs, ``workers`` at a time (each in its own sandbox); results in order."""
        sources = list(sources)
        if workers <= 1 or len(sources) <= 1:
            return [self.run(s) for s in sources]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="tp-sandbox") as pool:
            return list(pool.map(self.run, sources))

    def check(self, problem: Mapping[str, Any], completion: str) -> ExecutionResult:
        """Run a HumanEval-format problem's tests against one completion."""
        return self.run(humaneval_program(problem, completion))

    def _run_in(self, root: str, source: str, t0: float) -> ExecutionResult:
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        uid = gid = None
        # Traversable but not listable, so the program reaches its work dir by absolute path while
        # the captured output files next to it stay private.
        os.chmod(root, 0o711)
        if os.geteuid() == 0 and (self._namespaces or _nobody_can_run(self.python)):
            # Never run generated code as root: drop to nobody, owner of nothing but the work dir.
            pw = pwd.getpwnam("nobody")
            uid, gid = pw.pw_uid, pw.pw_gid
            os.chown(work, uid, gid)
        nonce = secrets.token_hex(16)
        cfg = {
            "work": work, "nonce": nonce, "uid": uid, "gid": gid, "guard": bool(self.python_guard),
            "memory": int(self.memory_mb) << 20, "cpu": int(self.cpu_seconds),
            "fsize": int(self.max_output_bytes), "nofile": int(self.max_open_files),
            # RLIMIT_NPROC counts every process of the user: only meaningful for a dedicated user.
            "nproc": int(self.max_processes) if uid is not None else None,
            "ns": None,
        }
        env = dict(_CLEAN_ENV, HOME=work, TMPDIR=work)
        py = [self.python, "-I", "-S", "-c", _BOOTSTRAP]
        if self._namespaces:
            cfg["ns"] = {"stage": os.path.join(root, "stage"), "expose": _expose_plan(self.python)}
            cmd = [shutil.which("unshare") or "unshare", *_UNSHARE_ARGS, "--", "/bin/sh", "-c", _NS_SCRIPT,
                   "sandbox", *py]
            env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        else:
            cmd = py
        payload = (json.dumps(cfg) + "\n" + source).encode("utf-8", "surrogatepass")
        out_path, err_path = os.path.join(root, "stdout"), os.path.join(root, "stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env, cwd=work,
                                    start_new_session=True, close_fds=True)
            timed_out = False
            try:
                proc.communicate(payload, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # The whole group, also after a normal exit: stray children must not outlive the run.
                _kill_group(proc.pid)
                proc.wait()
        seconds = time.perf_counter() - t0
        stdout = _read_bounded(out_path, self.max_output_bytes)
        stderr = _read_bounded(err_path, self.max_output_bytes)
        marker = f"\n{nonce}\n"
        finished = stdout.endswith(marker)
        if finished:
            stdout = stdout[: -len(marker)]
        rc = proc.returncode
        status, error = self._classify(rc, timed_out, finished, stdout, stderr)
        return ExecutionResult(status, rc, stdout, stderr, seconds, error)

    def _classify(self, rc: int | None, timed_out: bool, finished: bool, stdout: str, stderr: str):
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if timed_out:
            return "timeout", f"wall-clock limit of {self.timeout:g} s"
        sig = None
        if rc is not None and rc < 0:
            sig = -rc
        elif rc is not None and rc > 128 and self._namespaces:  # sh reports a signalled child as 128+N
            sig = rc - 128
        if rc == 97 and self._namespaces and "sandbox:" in stderr:
            return "sandbox_error", last
        if sig == signal.SIGXCPU:
            return "cpu_limit", f"CPU-time limit of {self.cpu_seconds} s"
        if sig == signal.SIGXFSZ or len(stdout) >= self.max_output_bytes or len(stderr) >= self.max_output_bytes:
            return "output_limit", f"output or file larger than {self.max_output_bytes} bytes"
        if "MemoryError" in last or sig in (signal.SIGSEGV, signal.SIGABRT) and "memory" in stderr.lower():
            return "memory_limit", f"address-space limit of {self.memory_mb} MiB"
        if sig is not None:
            return "killed", f"killed by signal {signal.Signals(sig).name if sig in signal.valid_signals() else sig}"
        if rc == 0 and finished:
            return "passed", ""
        if rc == 0:
            return "failed", "the program exited before its end"
        return "failed", last or f"exit status {rc}"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_bounded(path: str, limit: int) -> str:
    with open(path, "rb") as fh:
        data = fh.read(limit + 64)  # + room for the end marker
    return data.decode("utf-8", "replace")
