"""The supervisor program every sandboxed run starts as (``python -I -S -c BOOTSTRAP``), and why
nothing the program under test can reach decides the verdict.

It is source text, not a module of this package: it runs in a fresh interpreter that imports
nothing of transfer_probe (the interpreter may be one the project is not installed in), and its
children ``execv`` it again for the program's own stage.
"""

from __future__ import annotations

# Runs as ``python -I -S -c BOOTSTRAP``; its settings and sources arrive as one JSON on stdin. The
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
BOOTSTRAP = r'''
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
