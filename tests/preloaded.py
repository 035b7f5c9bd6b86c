"""Test processes forked from one that has already imported TensorFlow.

Each run of ``python -m sgan_keras.train``, and each script that needs a
TensorFlow runtime of its own (logical CPUs, a cluster), spends 5-7 s of CPU
importing TensorFlow, Keras and this package; the suite starts about 40 of
them, on 2 cores. :func:`launch_module`, :func:`run_module`,
:func:`launch_code`, :func:`run_code`, :func:`run_script` and
:func:`run_module_with_stdout` start each
from a *server*: a process (one per pytest worker) that imported
:mod:`sgan_keras.trainer` once and forks a child per command. Importing it
does not start TensorFlow's runtime (no device, no thread pool: the only
other thread is NumPy's OpenBLAS pool, which re-creates itself in a forked
child), so each child starts the runtime itself, as a fresh interpreter
would, under its own environment (``TF_CONFIG``, logical CPUs, the CPU
allocator).

A child is a process of its own that runs the CLI's entry point the way
``python -m sgan_keras.train`` does (``runpy``, as ``__main__``), or a
script as ``python -c`` or ``python path`` does: its own argv, environment,
working directory, stdout and stderr, pid, signals and exit status
(negative: killed by that signal, as ``subprocess.Popen`` has it). Only the import is shared (the
modules it loaded stay loaded). What happens before or during the import
(flags checked before TensorFlow is imported, oneDNN chosen before that
import (the server chooses it first, as the CLI does), the allocator chosen
before the runtime starts, ``gc.freeze``, which modules a script imports,
TensorFlow's C++ log level, which it reads once at import, and start-up
time) is tested on real interpreters (``subprocess``).
"""
import atexit
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import types

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ the server
def _serve():
    """Reads one JSON request per line on stdin, forks a child for each and
    answers its pid; writes each child's exit status to its ``status`` file
    (atomically) as soon as it ends. Ends when stdin closes and every child
    has ended. It waits on the children's pidfds (``os.pidfd_open``: Linux
    5.3 and later), without polling: the loop it replaced woke every 10 ms,
    1.7% of a core for each pytest worker's server."""
    from sgan_keras import onednn
    # As the CLI for most architectures, before TensorFlow is imported (it reads
    # it then); one process serves every run, so GANs in Action's runs get
    # oneDNN's kernels here, not the Eigen ones its CLI runs choose.
    onednn.choose_cpu_kernels()
    import sgan_keras.trainer  # noqa: F401  (TensorFlow, Keras: imported, not started)
    from sgan_keras import faults
    from tensorflow.python.eager import context
    started = context.context_safe()
    # pylint: disable-next=protected-access
    if started is not None and started._context_handle is not None:
        raise RuntimeError("importing sgan_keras.trainer started TensorFlow's runtime: "
                           "its thread pools cannot be forked")
    ctypes.CDLL(None).fflush(None)   # the C streams' buffered import log lines: written once
    children = {}    # a pidfd (readable once its child has ended) -> (pid, status path)
    reading = True
    while reading or children:       # blocks until a request or a child's end: no polling
        ready = select.select(([sys.stdin] if reading else []) + list(children), [], [])[0]
        for pidfd in (fd for fd in ready if fd is not sys.stdin):
            pid, status_path = children.pop(pidfd)
            os.close(pidfd)
            faults.write_text(status_path, str(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])))
        if sys.stdin in ready:
            line = sys.stdin.readline()
            if not line:     # the pytest worker ended: so did its tests
                reading = False
                for pid, _ in children.values():
                    os.kill(pid, signal.SIGKILL)
                continue
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                for pidfd in children:   # the siblings' ends are the server's to wait for
                    os.close(pidfd)
                _child(request)          # never returns
            children[os.pidfd_open(pid)] = (pid, request["status"])
            print(json.dumps({"pid": pid}), flush=True)


def _child(request):
    """In the forked child: becomes the process ``request`` describes
    (``python -m module``, ``python -c code`` or ``python path``), and ends as
    the interpreter would: its exit status, its threads joined, its ``atexit``
    handlers run, killed by SIGINT on an uncaught ``KeyboardInterrupt``."""
    import runpy
    import threading
    import traceback
    code = 1
    interrupted = False
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            opened = os.open(path, flags, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        try:
            if "code" in request:     # python -c CODE ARGV...
                sys.argv = ["-c", *request["argv"]]
                exec(compile(request["code"], "<string>", "exec"),  # pylint: disable=exec-used
                     {"__name__": "__main__", "__builtins__": __builtins__})
            elif "script" in request:   # python PATH ARGV...: its directory first on the path
                sys.argv = [request["script"], *request["argv"]]
                sys.path.insert(0, os.path.dirname(os.path.abspath(request["script"])))
                runpy.run_path(request["script"], run_name="__main__")
            else:                     # python -m MODULE ARGV... (runpy sets argv[0])
                sys.argv = ["-m", *request["argv"]]
                runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:   # what the interpreter does with it
            if exit.code is None or isinstance(exit.code, int):
                code = exit.code or 0
            else:
                print(exit.code, file=sys.stderr)
        except BaseException as error:   # uncaught: its traceback, status 1
            traceback.print_exc()
            interrupted = isinstance(error, KeyboardInterrupt)
    finally:
        try:
            threading._shutdown()    # pylint: disable=protected-access
            atexit._run_exitfuncs()  # pylint: disable=protected-access
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
        finally:
            if interrupted:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
            os._exit(code)


# ------------------------------------------------------------------ the client
# TensorFlow reads its C++ log level once, at import: the server's holds for
# every child, whatever its TF_CPP_MIN_LOG_LEVEL (tests that need another level
# start a real interpreter).
LOG_LEVEL = "2"
_server = None
# The server's stderr (TensorFlow's import lines, or why it ended) and each
# child's stdout, stderr and exit status: made with the server, in the pytest
# worker only, and removed when the worker ends.
_scratch = None


def _the_server():
    """This pytest worker's server, started on first use; it ends with the worker."""
    global _server, _scratch   # pylint: disable=global-statement
    if _server is None or _server.poll() is not None:
        _scratch = _scratch or tempfile.TemporaryDirectory(prefix="sgan_preloaded_")
        here = os.path.dirname(os.path.abspath(__file__))
        with open(_server_log(), "w") as log:
            _server = subprocess.Popen(
                [sys.executable, "-c", "import preloaded; preloaded._serve()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                cwd=REPO_ROOT,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": LOG_LEVEL, "PYTHONUNBUFFERED": "1",
                     "PYTHONPATH": os.pathsep.join(
                         [here, REPO_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])})
    return _server


def _server_log():
    return os.path.join(_scratch.name, "server.log")


class Child:
    """A forked process, with the part of ``subprocess.Popen``'s interface the
    tests use (``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``,
    ``kill``, ``communicate``); stdout and stderr are text."""

    def __init__(self, request, env, cwd):
        request = {**request, "argv": [str(arg) for arg in request["argv"]]}
        server = _the_server()
        directory = tempfile.mkdtemp(dir=_scratch.name)
        self._paths = types.SimpleNamespace(
            stdout=os.path.join(directory, "stdout"), stderr=os.path.join(directory, "stderr"),
            status=os.path.join(directory, "status"))
        for path in (self._paths.stdout, self._paths.stderr):
            open(path, "w").close()   # readable from the start
        server.stdin.write(json.dumps({**request, "env": dict(env), "cwd": str(cwd),
                                       **vars(self._paths)}) + "\n")
        server.stdin.flush()
        answer = server.stdout.readline()
        if not answer:
            with open(_server_log()) as log:
                raise RuntimeError(f"the preloaded server ended: {log.read()[-3000:]}")
        self.pid = json.loads(answer)["pid"]
        self.returncode = None

    def poll(self):
        if self.returncode is None and os.path.exists(self._paths.status):
            with open(self._paths.status) as file:
                self.returncode = int(file.read())
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked process {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, number):
        if self.poll() is None:
            os.kill(self.pid, number)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def stdout_so_far(self):
        """What the process has written to its standard output until now."""
        with open(self._paths.stdout) as out:
            return out.read()

    def communicate(self, timeout=None):
        """Waits for the end; returns ``(stdout, stderr)``."""
        self.wait(timeout)
        with open(self._paths.stdout) as out, open(self._paths.stderr) as err:
            return out.read(), err.read()


def launch_module(module, argv, env, cwd=REPO_ROOT):
    """Starts ``python -m module *argv`` (forked); returns its :class:`Child`."""
    return Child({"module": module, "argv": argv}, env, cwd)


def run_module(module, argv, env, cwd=REPO_ROOT, timeout=None):
    """Runs it to the end; returns a ``subprocess.CompletedProcess`` (text)."""
    return _completed(launch_module(module, argv, env, cwd),
                      [sys.executable, "-m", module, *argv], timeout)


def launch_code(code, argv=(), env=None, cwd=REPO_ROOT):
    """Starts ``python -c code *argv`` (forked); returns its :class:`Child`."""
    return Child({"code": code, "argv": argv}, os.environ if env is None else env, cwd)


def run_code(code, argv=(), env=None, cwd=REPO_ROOT, timeout=None):
    """Runs it to the end; returns a ``subprocess.CompletedProcess`` (text)."""
    return _completed(launch_code(code, argv, env, cwd), [sys.executable, "-c", code, *argv],
                      timeout)


# python -m MODULE ARGV... with descriptor 1 replaced before the module runs.
_STDOUT_REPLACED = """
import os, runpy, sys
_, stdout, module, *argv = sys.argv
if stdout == "closed":
    read, write = os.pipe()
    os.close(read)           # the reader has gone
else:
    write = os.open(stdout, os.O_WRONLY)
os.dup2(write, 1)
os.close(write)
sys.argv = ["-m", *argv]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_module_with_stdout(module, stdout, argv, env, timeout=None):
    """Runs ``python -m module *argv`` (forked) to the end with its standard
    output replaced first: ``"closed"``, a pipe whose reader has gone (``|
    head`` once it has its lines), else the file ``stdout`` opened for writing
    (``/dev/full``). Returns a ``subprocess.CompletedProcess`` (text)."""
    return run_code(_STDOUT_REPLACED, [stdout, module, *argv], env, timeout=timeout)


def run_script(path, argv=(), env=None, cwd=REPO_ROOT, timeout=None):
    """Runs ``python path *argv`` (forked) to the end: ``path`` (relative to
    ``cwd``) as ``__main__``, its directory first on ``sys.path``; returns a
    ``subprocess.CompletedProcess`` (text)."""
    child = Child({"script": str(path), "argv": argv}, os.environ if env is None else env, cwd)
    return _completed(child, [sys.executable, str(path), *argv], timeout)


def _completed(child, args, timeout):
    try:
        stdout, stderr = child.communicate(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise
    return subprocess.CompletedProcess(args, child.returncode, stdout, stderr)
