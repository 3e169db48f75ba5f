"""The code sandbox: opt-in, limits, isolation against adversarial programs, and pass@k.

Every adversarial program is bounded by itself (a fork loop forks at most 64 times, output stops
after 64 MiB) so a broken sandbox cannot take the machine down with it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import pytest

from transfer_probe import sandbox as sb
from transfer_probe.sandbox import (
    ALLOW_ENV,
    CodeExecutionNotAllowed,
    Sandbox,
    estimate_pass_at_k,
    evaluate_pass_at_k,
    humaneval_program,
    pass_at_k,
)

SECRET = "tp-secret-7c1f0b9e"

ADD = {
    "task_id": "toy/0",
    "prompt": 'def add(a, b):\n    """Return a + b."""\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}


# ---------------------------------------------------------------------------------------------
# Opt-in

def test_code_execution_is_off_by_default(monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(CodeExecutionNotAllowed) as e:
        Sandbox()
    msg = str(e.value)
    assert "allow_code_execution=True" in msg and f"{ALLOW_ENV}=1" in msg
    with pytest.raises(CodeExecutionNotAllowed):
        evaluate_pass_at_k([ADD], [["    return a + b\n"]])
    monkeypatch.setenv(ALLOW_ENV, "1")
    if _auto_isolation_unavailable() is None:  # as root without namespaces "auto" refuses (tested below)
        assert Sandbox().run("pass").passed
    with pytest.raises(CodeExecutionNotAllowed):  # an explicit False wins over the variable
        Sandbox(allow_code_execution=False)
    monkeypatch.setenv(ALLOW_ENV, "0")
    with pytest.raises(CodeExecutionNotAllowed):
        Sandbox()


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="isolation must be"):
        Sandbox(allow_code_execution=True, isolation="docker")
    with pytest.raises(ValueError, match="memory_mb=8 is too small"):
        Sandbox(allow_code_execution=True, memory_mb=8)
    with pytest.raises(ValueError, match="timeout must be positive"):
        Sandbox(allow_code_execution=True, timeout=0)


# ---------------------------------------------------------------------------------------------
# pass@k

def _exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_the_combinatorial_definition():
    for n in (1, 2, 5, 10, 20):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(_exact(n, c, k)), abs=1e-12), (n, c, k)
    assert pass_at_k(200, 13, 1) == pytest.approx(13 / 200)
    # Large n: the naive ratio of binomials overflows floats; the product form stays exact.
    assert pass_at_k(2000, 37, 100) == pytest.approx(float(_exact(2000, 37, 100)), rel=1e-9)
    assert estimate_pass_at_k(10, [0, 5, 10], 1) == pytest.approx([0.0, 0.5, 1.0])
    assert estimate_pass_at_k([4, 10], [1, 1], 2) == pytest.approx([0.5, 0.2])
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(5, 1, 10)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(5, 6, 1)


def test_humaneval_program_and_missing_fields():
    prog = humaneval_program(ADD, "    return a + b\n")
    assert prog.endswith("check(add)\n") and prog.startswith(ADD["prompt"])
    with pytest.raises(ValueError, match="no 'entry_point' field"):
        humaneval_program({"task_id": "x", "prompt": "", "test": ""}, "")


# ---------------------------------------------------------------------------------------------
# Adversarial programs: limits (each mode that runs here)

def _limits_programs() -> dict[str, str]:
    return {
        "sleep_forever": "import time\ntime.sleep(60)\n",
        "memory_hog": "blocks = []\nfor _ in range(64):\n    blocks.append(bytearray(64 << 20))\n",
        "fork_loop": ("import os\nfor _ in range(64):\n    if os.fork() == 0:\n"
                      "        os.execv('/bin/sleep', ['sleep', '20.0301'])\n"),
        "huge_output": "import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * 65536)\n",
    }


def _leftover_sandbox_processes(markers: tuple[bytes, ...]) -> list[str]:
    """Live processes with one of ``markers`` in their command line (markers of this test only:
    another engineer's sandbox may be running on the machine)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(m in cmd for m in markers):
            found.append(pid)
    return found


@pytest.mark.parametrize("mode", ["namespace", "process"])
def test_limits_hold_and_the_run_continues(mode):
    python = PROCESS_PYTHON if mode == "process" else sys.executable
    if python is None or sb.isolation_unavailable_reason(mode, python):
        pytest.skip(sb.isolation_unavailable_reason(mode, python or sys.executable) or "no interpreter for others")
    # Without the Python guard: the operating system's limits are under test.
    box = Sandbox(allow_code_execution=True, isolation=mode, timeout=2.5, cpu_seconds=1, memory_mb=512,
                  max_output_bytes=1 << 16, max_processes=16, python=python, python_guard=False)
    assert box.mode == mode and box.signature.startswith(f"sandbox:{mode}") and "|user:own-uid|" in box.signature
    t0 = time.perf_counter()
    results = {name: box.run(src) for name, src in _limits_programs().items()}
    assert time.perf_counter() - t0 < 30
    # The CPU limit, with a wall clock generous enough that a busy machine cannot reach it first.
    results["infinite_loop"] = Sandbox(allow_code_execution=True, isolation=mode, timeout=20, cpu_seconds=1,
                                       memory_mb=512, python=python).run("while True:\n    pass\n")
    for name, r in results.items():
        assert not r.passed, (name, r)
        assert len(r.stdout) <= (1 << 16) + 64 and len(r.stderr) <= (1 << 16) + 64, name
    assert results["infinite_loop"].status == "cpu_limit", results["infinite_loop"]
    assert results["sleep_forever"].status == "timeout" and results["sleep_forever"].seconds < 4.5
    assert results["memory_hog"].status == "memory_limit", results["memory_hog"]
    assert results["huge_output"].status == "output_limit", results["huge_output"]
    assert "Resource temporarily unavailable" in results["fork_loop"].error, results["fork_loop"]  # RLIMIT_NPROC
    assert not _leftover_sandbox_processes(markers=(b"20.0301",))
    # The run goes on: a correct program right after all of them passes, an incorrect one fails.
    assert box.check(ADD, ADD["canonical_solution"]).passed
    assert box.check(ADD, "    return a - b\n").status == "failed"


# ---------------------------------------------------------------------------------------------
# Attacks (issue 12, items 10 and 11), in every isolation mode that runs here
#
# Each attack is a *wrong* completion of ADD whose module-level code attacks; a driver process,
# started with SECRET in its real environment (``/proc/<pid>/environ``), runs them all through
# ``Sandbox.check`` and prints the results. Every step that gets through prints ``ESCAPE:<step>``.

# Switch the audit-hook guard off (through gc, as a program can): the OS must hold without it.
_GUARD_OFF = """
import gc
for _o in gc.get_objects():
    if type(_o).__name__ == "function" and _o.__name__ == "guard" and _o.__closure__:
        for _c in _o.__closure__:
            if _c.cell_contents == [False]:
                _c.cell_contents[0] = True
                print("guard-off")
"""

_ESCAPE = "import sys\nsys.stdout.reconfigure(line_buffering=True)\n" + _GUARD_OFF + """
import os, signal, socket, subprocess, sys, time
def attempt(step, fn):
    try:
        out = fn()
    except BaseException as e:
        print("refused", step, type(e).__name__, e)
    else:
        print("ESCAPE:" + step, repr(out)[:200])
attempt("read-shadow", lambda: open("/etc/shadow").read())
attempt("driver-environ", lambda: open("/proc/%d/environ" % DRIVER, "rb").read())
def all_environs():  # the secret's value is not given to the program: it has to find it
    found = []
    for p in os.listdir("/proc"):
        try:
            found.append(open("/proc/%s/environ" % p, "rb").read())
        except OSError:
            pass
    hits = [e for e in found if b"TP_TEST_API_KEY" in e]
    assert hits, "no secret in %d readable environments" % len(found)
    print(hits)
attempt("any-environ", all_environs)
for d in OUTSIDE:
    def via_dir_fd(d=d):
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        w = os.open("escaped-dirfd.txt", os.O_WRONLY | os.O_CREAT, 0o666, dir_fd=fd)
        os.write(w, b"escaped")
    attempt("write-dirfd:" + d, via_dir_fd)
    attempt("write-open:" + d, lambda d=d: open(os.path.join(d, "escaped-open.txt"), "w").write("escaped"))
    attempt("mkdir:" + d, lambda d=d: os.mkdir(os.path.join(d, "escaped-dir")))
def connect():
    s = socket.create_connection(("127.0.0.1", PORT), timeout=2)
    s.sendall(b"escaped")
attempt("network", connect)
attempt("pidfd-kill-driver", lambda: signal.pidfd_send_signal(os.pidfd_open(DRIVER), signal.SIGKILL))
attempt("kill-driver", lambda: os.kill(DRIVER, signal.SIGKILL))
attempt("killpg-driver", lambda: os.killpg(os.getpgid(DRIVER), signal.SIGKILL))
os.kill(-1, signal.SIGKILL)  # every process it may signal: whatever survives must not include the driver
"""

# Processes meant to outlive the run: a new session through subprocess (``_posixsubprocess.fork_exec``)
# and a double-forked daemon, both out of the process group.
_SURVIVE = _GUARD_OFF + """
import os, subprocess, time
def daemon():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", "37.2501"])
        os._exit(0)
    return "forked"
print("spawned", subprocess.Popen(["/bin/sleep", "37.5001"], start_new_session=True).pid, daemon(), flush=True)
time.sleep(0.2)
"""

# Item 10: forge the verdict. Collect every string reachable (frames, gc), print each as a line of
# its own (the old end-of-program marker), write a fake verdict to every fd this process or any
# other has open, kill every process it may, then leave with status 0.
_FORGE = """
import gc, json, os, sys
seen = set()
f = sys._getframe()
while f is not None:
    for d in (f.f_globals, f.f_locals):
        seen.update(v for v in d.values() if isinstance(v, str))
    f = f.f_back
seen.update(o for o in gc.get_objects() if isinstance(o, str))
for o in gc.get_objects():
    if isinstance(o, dict):
        seen.update(v for v in o.values() if isinstance(v, str) and len(v) < 200)
sys.stdout.write("".join("\\n%s\\n" % s for s in seen))
sys.stdout.flush()
fake = json.dumps({"judge": ["exit", 0], "program": ["exit", 0]}).encode()
for fd in range(1, 256):
    try:
        os.write(fd, fake)
    except OSError:
        pass
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                with open("/proc/%s/fd/%s" % (pid, fd), "wb", buffering=0) as fh:
                    fh.write(fake)
                print("ESCAPE:wrote-fd-of", pid)
            except OSError:
                pass
sys.stdout.flush()
os.kill(-1, 9)  # then kill whatever it may (the supervisor, the judge) so that only the fake is left
os._exit(0)
"""

_JUDGE = _GUARD_OFF + """
import os, signal
for pid in os.listdir("/proc"):  # stop or kill whatever is visible: the judge, the supervisor
    if pid.isdigit() and int(pid) != os.getpid():
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            try:
                os.kill(int(pid), sig)
            except OSError:
                pass
        try:
            open("/proc/%s/mem" % pid, "wb").write(b"x")
            print("ESCAPE:proc-mem", pid)
        except OSError:
            pass
"""

# name: (the wrong function body, module-level code run when the completion is imported)
ATTACKS = {
    "escape": ("    return 0\n", _ESCAPE),
    "survive": ("    return 0\n", _SURVIVE),
    "forge_verdict": ("    return 0\n", _FORGE),
    "exit_0_at_import": ("    return 0\n", "import os\nos._exit(0)\n"),
    "exit_0_when_called": ("    import os\n    os._exit(0)\n", ""),
    "sys_exit_when_called": ("    raise SystemExit(0)\n", ""),
    "always_equal": ("    return 0\n", "class Yes:\n    def __eq__(self, other):\n        return True\n"
                                       "    __hash__ = object.__hash__\nadd = lambda a, b: Yes()\n"),
    "int_subclass": ("    return 0\n", "class Int(int):\n    def __eq__(self, other):\n        return True\n"
                                       "add = lambda a, b: Int(0)\n"),
    "stop_or_kill_the_judge": ("    return 0\n", _JUDGE),
    "read_the_tests": ("    return 0\n", "import gc, sys\nprint([o for o in gc.get_objects() if isinstance(o, str) "
                                         "and 'candidate(2, 3)' in o], repr(sys.stdin.read()), flush=True)\n"),
}

_DRIVER = r"""
import json, os, sys
sys.path.insert(0, os.environ.pop("TP_REPO"))
from transfer_probe.sandbox import Sandbox
args = json.loads(sys.argv[1])
box = Sandbox(allow_code_execution=True, isolation=args["mode"], timeout=10, cpu_seconds=5, memory_mb=512,
              python=args["python"] or sys.executable)
header = "DRIVER = %d\nPORT = %d\nOUTSIDE = %r\n" % (os.getpid(), args["port"], args["outside"])
out = {"signature": box.signature, "uid": os.getuid(), "results": {}}
for name, (body, module) in args["attacks"].items():
    out["results"][name] = box.check(args["problem"], body + header + module).to_dict()
out["canonical"] = box.check(args["problem"], args["problem"]["canonical_solution"]).to_dict()
print(json.dumps(out))
"""

_READABLE: list[str] = []


def _repo() -> str:
    """A copy of the package an unprivileged uid can read: the checkout may sit in a private folder
    (a fresh clone under a 0700 temp dir, a home directory), where uid 65534 cannot import it."""
    if not _READABLE:
        import atexit
        import shutil
        import tempfile

        top = tempfile.mkdtemp(prefix="tp-sandbox-src-")
        shutil.copytree(Path(sb.__file__).resolve().parents[1], Path(top) / "transfer_probe",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for root, _dirs, files in os.walk(top):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        atexit.register(shutil.rmtree, top, ignore_errors=True)
        _READABLE.append(top)
    return _READABLE[0]


def _interpreter_for_others() -> str | None:
    """An interpreter an unprivileged uid can start (the venv's may live under /root)."""
    for python in (os.path.realpath(sys.executable), "/usr/bin/python3"):
        if os.path.exists(python) and sb._uid_can_start(python) is None:
            return python
    return None


PROCESS_PYTHON = _interpreter_for_others() if os.geteuid() == 0 else sys.executable


def _driver_user(mode: str):
    """(uid to run the driver as or None, interpreter) for ``mode``, or a reason to skip."""
    if mode == "userns":
        if os.geteuid() != 0:
            return None, sys.executable
        if PROCESS_PYTHON is None:
            return "no interpreter an unprivileged uid can start, to drive the 'userns' test from"
        return 65534, PROCESS_PYTHON
    if os.geteuid() != 0:
        return f"isolation={mode!r} needs root"
    return None, sys.executable


def _run_driver(mode: str, attacks: dict[str, str], outside: list[str], port: int) -> dict:
    who = _driver_user(mode)
    if isinstance(who, str):
        pytest.skip(who)
    uid, python = who
    args = {"mode": mode, "python": PROCESS_PYTHON if mode == "process" else None,
            "port": port, "outside": outside, "attacks": attacks, "problem": ADD}
    env = {"PATH": "/usr/bin:/bin", "TP_TEST_API_KEY": SECRET, "TP_REPO": _repo(), "LANG": "C.UTF-8"}
    proc = subprocess.run([python, "-c", _DRIVER, json.dumps(args)], env=env, capture_output=True, text=True,
                          timeout=240, user=uid, cwd="/")
    if proc.returncode != 0 and "IsolationUnavailable" in proc.stderr:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"the driver died or failed (rc {proc.returncode}): {proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def outside_dirs(request):
    """Directories outside the sandbox: world-writable ones in /tmp and /var/tmp (only a mount or a
    sweep can stop those) and a private one."""
    dirs = []
    for top in ("/tmp", "/var/tmp"):
        d = tempfile.mkdtemp(prefix="tp-sandbox-outside-", dir=top)
        os.chmod(d, 0o777)
        dirs.append(d)
    dirs.append(tempfile.mkdtemp(prefix="tp-sandbox-private-"))
    if os.geteuid() == 0:
        os.chmod(dirs[-1], 0o755)  # readable, not writable, by others
    yield dirs
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


# What each mode does not isolate, by design (docs/reliability.md, "The pass@k sandbox"): without
# Landlock (ABI >= 4), the process mode has no network isolation and world-writable directories
# stay writable (only what it leaves at the top of /tmp, /var/tmp and /dev/shm is removed).
LANDLOCK = sb.landlock_abi()
ALLOWED_ESCAPES = {"namespace": set(), "userns": set(),
                   "process": set() if LANDLOCK >= 4 else {"network", "write-world-writable"}}


@pytest.mark.parametrize("mode", ["namespace", "userns", "process"])
def test_every_attack_fails_in_every_mode(mode, outside_dirs, listener):
    if mode == "process" and PROCESS_PYTHON is None:
        pytest.skip("no interpreter an unprivileged uid can start (isolation='process' needs one)")
    out = _run_driver(mode, ATTACKS, outside_dirs, listener.getsockname()[1])
    assert out["signature"].startswith(f"sandbox:{mode}")
    results = out["results"]
    assert out["canonical"]["status"] == "passed", out["canonical"]  # the sandbox works...
    for name, r in results.items():  # ...and no attack passes
        assert r["status"] != "passed", (name, r)
        text = r["stdout"] + r["stderr"] + r["error"]
        assert SECRET not in text, (name, "secret leaked")
    escapes = {ln.split()[0][len("ESCAPE:"):] for r in results.values() for ln in r["stdout"].splitlines()
               if ln.startswith("ESCAPE:")}
    escapes = {"write-world-writable" if e.startswith(("write-", "mkdir:")) and e.split(":", 1)[1] in outside_dirs[:2]
               else e for e in escapes}
    assert escapes <= ALLOWED_ESCAPES[mode], escapes
    esc = results["escape"]["stdout"]
    assert "guard-off" in esc  # the audit hook is no boundary: the program switched it off...
    assert "spawned" in results["survive"]["stdout"], results["survive"]
    assert "refused read-shadow" in esc and "refused pidfd-kill-driver" in esc  # ...the OS held
    if mode != "process" or LANDLOCK >= 4:
        assert "refused network" in esc
    # Nothing written outside is left, no process of the run survives, and the driver lived to report.
    left = [os.listdir(d) for d in outside_dirs]
    assert left == [[], [], []] or ("write-world-writable" in ALLOWED_ESCAPES[mode] and left[2] == []), left
    assert not _leftover_sandbox_processes(markers=(b"37.2501", b"37.5001"))
    assert _no_connection(listener) or "network" in ALLOWED_ESCAPES[mode]
    # The forgeries: no verdict was forged, and the tests never reached the program.
    assert results["read_the_tests"]["stdout"].startswith("[]"), results["read_the_tests"]
    assert results["always_equal"]["status"] == "failed" and "cannot leave the sandbox" in \
        results["always_equal"]["stderr"], results["always_equal"]


def test_the_judge_decides_even_without_isolation():
    """What does not depend on isolation holds in ``unsafe-none`` too: leaving early, objects that
    equal anything, and reading the tests all fail (attacks on other processes are not run here:
    in that mode nothing stops them)."""
    box = Sandbox(allow_code_execution=True, isolation="unsafe-none", timeout=10)
    assert box.signature.startswith("sandbox:unsafe-none|user:")
    names = ["exit_0_at_import", "exit_0_when_called", "sys_exit_when_called", "always_equal", "int_subclass",
             "read_the_tests"]
    results = {n: box.check(ADD, ATTACKS[n][0] + ATTACKS[n][1]) for n in names}
    assert {n: r.status for n, r in results.items()} == dict.fromkeys(names, "failed")
    assert results["read_the_tests"].stdout.startswith("[] ''"), results["read_the_tests"]
    assert "ended before answering" in results["exit_0_at_import"].error
    assert "cannot leave the sandbox" in results["int_subclass"].error
    assert box.check(ADD, ADD["canonical_solution"]).passed


def test_auto_refuses_without_real_isolation_and_unsafe_none_is_named():
    """A non-root user without user namespaces (here: no ``unshare`` on the PATH): ``auto`` refuses
    and names the opt-in; ``unsafe-none`` runs and says so in the signature."""
    if os.geteuid() == 0 and PROCESS_PYTHON is None:
        pytest.skip("no interpreter an unprivileged uid can start, to run the test as non-root")
    script = (
        "import os, sys, shutil\nsys.path.insert(0, os.environ['TP_REPO'])\n"
        "from transfer_probe import sandbox as sb\n"
        # this machine may have unshare; a machine without it is simulated
        "from transfer_probe.sandbox import isolation\nisolation.SYS_PATH = '/nonexistent'\n"
        "try:\n    sb.Sandbox(allow_code_execution=True)\nexcept sb.IsolationUnavailable as e:\n    print('REFUSED', e)\n"
        "box = sb.Sandbox(allow_code_execution=True, isolation='unsafe-none')\n"
        "print('SIG', box.signature, box.run('print(1)').status)\n"
    )
    python = PROCESS_PYTHON if os.geteuid() == 0 else sys.executable
    proc = subprocess.run([python, "-c", script], env={"PATH": "/usr/bin:/bin", "TP_REPO": _repo()},
                          capture_output=True, text=True, timeout=60, user=65534 if os.geteuid() == 0 else None,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr
    refused = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REFUSED"))
    assert "refuses to run" in refused and "isolation='unsafe-none'" in refused and "userns:" in refused
    assert "SIG sandbox:unsafe-none|user:self|" in proc.stdout and proc.stdout.strip().endswith("passed")


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.3)
    yield srv
    srv.close()


def _no_connection(srv: socket.socket) -> bool:
    try:
        conn, _ = srv.accept()
    except TimeoutError:
        return True
    conn.close()
    return False


def _auto_isolation_unavailable() -> str | None:
    """Why ``isolation="auto"`` finds no real isolation here (None when it does)."""
    from transfer_probe.sandbox.isolation import IsolationUnavailable, resolve

    try:
        resolve("auto", sys.executable)
    except IsolationUnavailable as err:
        return str(err)
    return None


def test_evaluate_pass_at_k_with_a_misbehaving_sample():
    if (why := _auto_isolation_unavailable()) is not None:
        pytest.skip(why)
    # A wall clock far beyond the CPU limit: the endless sample is stopped by the CPU limit, always.
    box = Sandbox(allow_code_execution=True, timeout=20, cpu_seconds=1, memory_mb=512)
    sub = dict(ADD, task_id="toy/1", prompt="def sub(a, b):\n", entry_point="sub",
               test="def check(f):\n    assert f(5, 3) == 2\n")
    completions = [
        ["    return a + b\n", "    return a - b\n", "    while True:\n        pass\n", "    return b + a\n"],
        ["    return a - b\n", "    import os\n    os.kill(os.getppid(), 9)\n", "    return 2\n", "    return 0\n"],
    ]
    out = evaluate_pass_at_k([ADD, sub], completions, ks=[1, 2, 4, 8], sandbox=box, workers=2)
    assert out["passed"] == [2, 2] and out["n"] == 4
    assert out["statuses"][0][2] == "cpu_limit"
    assert out["pass@1"] == pytest.approx(0.5)
    assert out["pass@2"] == pytest.approx(1 - 1 / 6)
    assert out["pass@4"] == pytest.approx(1.0)
    assert "pass@8" not in out  # k > n is not estimable
    assert out["signature"] == box.signature
