"""The :class:`Sandbox`: one untrusted program (or one completion against a problem's tests) in, one
:class:`~transfer_probe.sandbox.result.ExecutionResult` out, under the isolation and limits it was
built with; and :func:`evaluate_pass_at_k`, every completion of every problem through it."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from transfer_probe.sandbox.bootstrap import BOOTSTRAP
from transfer_probe.sandbox.isolation import SYS_PATH, hide_plan, landlock_abi, launch_command, resolve
from transfer_probe.sandbox.optin import _require_opt_in
from transfer_probe.sandbox.passk import estimate_pass_at_k, humaneval_program
from transfer_probe.sandbox.result import ExecutionResult, classify, read_bounded, read_verdict
from transfer_probe.sandbox.uids import allocate_uids, release_uids

try:  # POSIX only
    import pwd
except ImportError:  # pragma: no cover - Windows
    pwd = None  # type: ignore[assignment]


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
        self._mode = resolve(self.isolation, self.python)

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
        uids = allocate_uids() if self._mode in ("namespace", "process") else None
        try:
            return self._run_in(root, job, uids, t0)
        except (OSError, subprocess.SubprocessError) as e:
            return ExecutionResult("sandbox_error", None, "", "", time.perf_counter() - t0, f"{type(e).__name__}: {e}")
        finally:
            if uids:
                release_uids(uids, sweep=self._mode == "process")
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
            "hide": hide_plan(self.python, root, self._mode) if ns else None, "bootstrap": BOOTSTRAP,
            "landlock": landlock_abi() if self._mode == "process" else 0,
        }

    def _command(self) -> list[str]:
        return launch_command(self._mode, [self.python, "-I", "-S", "-c", BOOTSTRAP])

    def _run_in(self, root: str, job: dict[str, Any], uids: list[int] | None, t0: float) -> ExecutionResult:
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        os.chmod(root, 0o711)  # traversable, not listable: the captured output next to it stays private
        if uids:
            os.chown(work, uids[0], uids[0])
        verdict_r, verdict_w = os.pipe()
        try:
            cfg = dict(self._config(root, work, uids, verdict_w), **job)
            env = dict(_CLEAN_ENV, HOME=work, TMPDIR=work, PATH=SYS_PATH)
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
            verdict = read_verdict(verdict_r)
        finally:
            os.close(verdict_r)
            if verdict_w >= 0:
                os.close(verdict_w)
        stdout = read_bounded(out_path, self.max_output_bytes)
        stderr = read_bounded(err_path, self.max_output_bytes)
        status, error = classify(job["role"], verdict, proc.returncode, timed_out, stdout, stderr,
                                 timeout=self.timeout, cpu_seconds=self.cpu_seconds, memory_mb=self.memory_mb,
                                 max_output_bytes=self.max_output_bytes)
        program = verdict.get("program") if verdict else None
        code = None if not program else program[1] if program[0] == "exit" else -program[1]
        return ExecutionResult(status, code, stdout, stderr, time.perf_counter() - t0, error)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _in_pool(fn, items: list, workers: int) -> list:
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="tp-sandbox") as pool:
        return list(pool.map(fn, items))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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

