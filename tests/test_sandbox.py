"""The code sandbox: opt-in, limits, isolation against adversarial programs, and pass@k.

Every adversarial program is bounded by itself (a fork loop forks at most 64 times, output stops
after 64 MiB) so a broken sandbox cannot take the machine down with it.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
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

NAMESPACES = sb.namespace_isolation_available()
NO_NAMESPACES = "namespace isolation unavailable here (needs root, unshare permitted, a 'nobody' user)"
# The namespace case is listed either way: where it cannot run it shows as SKIPPED, with the reason.
MODES = ["process", pytest.param("namespace", marks=pytest.mark.skipif(not NAMESPACES, reason=NO_NAMESPACES))]
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
# Adversarial programs

def _adversaries(parent_pid: int, port: int, outside: str) -> dict[str, str]:
    return {
        "infinite_loop": "while True:\n    pass\n",
        "sleep_forever": "import time\ntime.sleep(60)\n",
        "memory_hog": "blocks = []\nfor _ in range(64):\n    blocks.append(bytearray(64 << 20))\n",
        "fork_loop": ("import os, time\nfor _ in range(64):\n    if os.fork() == 0:\n        time.sleep(20)\n"
                      "        os._exit(0)\n"),
        "write_outside": f"with open({outside!r}, 'w') as fh:\n    fh.write('escaped')\n",
        "socket_to_localhost": (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                                "s.sendall(b'escaped')\n"),
        "read_env_secrets": (
            "import os\nprint(dict(os.environ))\n"
            f"print(open('/proc/{parent_pid}/environ', 'rb').read())\n"
            f"assert {SECRET!r} in str(dict(os.environ))\n"
        ),
        "kill_parent": f"import os, signal\nos.kill({parent_pid}, signal.SIGKILL)\n",
        "huge_output": "import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * 65536)\n",
        "fake_success_exit": "import os\nos._exit(0)\n",
    }


def _leftover_sandbox_processes() -> list[str]:
    """Processes still running the sandbox bootstrap (there must be none after a run)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if b"cfg = json.loads(sys.stdin.readline())" in cmd:
            found.append(pid)
    return found


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


def _check_contained(results: dict, outside, srv, max_output: int) -> None:
    for name, r in results.items():
        assert not r.passed, f"{name} passed: {r}"
        assert SECRET not in r.stdout and SECRET not in r.stderr, name
        assert len(r.stdout) <= max_output + 64 and len(r.stderr) <= max_output + 64, name
    assert not outside.exists(), "a sandboxed program wrote outside its directory"
    assert _no_connection(srv), "a sandboxed program reached a socket on 127.0.0.1"
    assert not _leftover_sandbox_processes()


@pytest.mark.parametrize("mode", MODES)
def test_adversarial_programs_are_contained_and_the_run_continues(mode, tmp_path, listener):
    outside = tmp_path / "outside.txt"
    box = Sandbox(allow_code_execution=True, isolation=mode, timeout=2.5, cpu_seconds=1, memory_mb=512,
                  max_output_bytes=1 << 16)
    assert box.mode == mode and f"sandbox:{mode}" in box.signature
    progs = _adversaries(os.getpid(), listener.getsockname()[1], str(outside))
    # Secrets: test_secret_in_the_parents_real_environment_stays_out (this process has none to leak).
    progs.pop("read_env_secrets")
    loop = progs.pop("infinite_loop")
    t0 = time.perf_counter()
    results = {name: box.run(src) for name, src in progs.items()}
    elapsed = time.perf_counter() - t0
    # The CPU limit, with a wall clock generous enough that a busy machine cannot reach it first.
    results["infinite_loop"] = Sandbox(allow_code_execution=True, isolation=mode, timeout=20, cpu_seconds=1,
                                       memory_mb=512).run(loop)
    _check_contained(results, outside, listener, 1 << 16)
    assert results["infinite_loop"].status == "cpu_limit", results["infinite_loop"]
    assert results["sleep_forever"].status == "timeout" and results["sleep_forever"].seconds < 4.5
    assert results["memory_hog"].status == "memory_limit"
    assert results["huge_output"].status == "output_limit"
    assert results["fake_success_exit"].error == "the program exited before its end"
    assert "PermissionError" in results["kill_parent"].error  # refused; we are still here to check
    assert elapsed < 40
    # The run goes on: a correct program right after all of them passes, an incorrect one fails.
    assert box.check(ADD, ADD["canonical_solution"]).passed
    assert box.check(ADD, "    return a - b\n").status == "failed"


@pytest.mark.skipif(not NAMESPACES, reason=NO_NAMESPACES)
def test_namespace_isolation_holds_without_the_python_guard(request, listener):
    """The operating-system layer alone (no audit hook): read-only mounts, no network, PID
    namespace, user nobody with a process limit."""
    # World-writable, so only the read-only mount (not file permissions) can stop the write.
    shared = tempfile.mkdtemp(prefix="tp-sandbox-test-", dir="/tmp")
    os.chmod(shared, 0o777)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    outside = Path(shared) / "outside.txt"
    box = Sandbox(allow_code_execution=True, isolation="namespace", python_guard=False, timeout=5,
                  cpu_seconds=2, memory_mb=512, max_output_bytes=1 << 16, max_processes=16)
    progs = _adversaries(os.getpid(), listener.getsockname()[1], str(outside))
    names = ["fork_loop", "write_outside", "socket_to_localhost", "kill_parent"]
    results = {name: box.run(progs[name]) for name in names}
    _check_contained(results, outside, listener, 1 << 16)
    assert "Read-only file system" in results["write_outside"].error
    assert "Network is unreachable" in results["socket_to_localhost"].error
    assert "No such process" in results["kill_parent"].error  # the parent is not even visible
    assert "Resource temporarily unavailable" in results["fork_loop"].error  # RLIMIT_NPROC
    who = box.run("import os\nprint(os.getuid(), os.getppid())\nopen('scratch.txt', 'w').write('ok')\n")
    assert who.passed and who.stdout.split() == ["65534", "1"]  # nobody, child of PID 1 of its own namespace


# Run in a separate process started with the secret in its real environment (``/proc/<pid>/environ``
# holds the environment a process started with; ``monkeypatch.setenv`` never reaches it).
_SECRET_PARENT = r"""
import json, os, sys
from transfer_probe.sandbox import Sandbox
secret, mode, guard = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
me = os.getpid()
with open("/proc/self/environ", "rb") as fh:
    assert secret.encode() in fh.read(), "the test's premise: the secret is in this process's environ"
read = ("import os\nprint(dict(os.environ))\n"
        f"print(open('/proc/{me}/environ', 'rb').read())\n"
        f"assert {secret!r} in str(dict(os.environ))\n")
box = Sandbox(allow_code_execution=True, isolation=mode, python_guard=guard, timeout=20, cpu_seconds=5,
              memory_mb=512)
res = box.run(read)
who = box.run("import os\nprint(os.getuid(), os.geteuid())\n")
print(json.dumps({"user": box.user, "mode": box.mode, "read": res.to_dict(), "who": who.to_dict()}))
"""

_UIDS = {"nobody": 65534, "root": 0, "self": os.getuid()}


@pytest.mark.parametrize("mode, guard", [
    ("process", True),  # the Python guard refuses other processes' /proc entries
    pytest.param("namespace", False, marks=pytest.mark.skipif(not NAMESPACES, reason=NO_NAMESPACES)),
])
def test_secret_in_the_parents_real_environment_stays_out(mode, guard):
    import json
    import subprocess
    import sys

    env = dict(os.environ, TP_TEST_API_KEY=SECRET)
    proc = subprocess.run([sys.executable, "-c", _SECRET_PARENT, SECRET, mode, "1" if guard else "0"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    read = out["read"]
    assert out["mode"] == mode
    assert read["status"] != "passed" and SECRET not in read["stdout"] + read["stderr"] + read["error"], read
    if mode == "process":
        assert "reading another process's /proc entry is not allowed" in read["error"], read
    else:  # its own PID namespace: the parent's pid does not exist there
        assert "No such file or directory" in read["error"], read
    # The user the program ran as is the one the sandbox reports (and signs its numbers with).
    who = out["who"]
    assert who["status"] == "passed", who
    assert who["stdout"].split() == [str(_UIDS[out["user"]])] * 2, (out["user"], who)
    if mode == "namespace" or os.geteuid() != 0:
        assert out["user"] == ("nobody" if mode == "namespace" else "self")


def test_evaluate_pass_at_k_with_a_misbehaving_sample():
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
