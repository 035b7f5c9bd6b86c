"""One run per output directory: an exclusive ``fcntl.flock`` on ``run.lock``.

The lock file holds the pid of the run holding the lock. The kernel releases
a ``flock`` when its process ends, however it ends (``kill -9`` included), so
a lock that can be taken while its file still names a pid was left by a run
that ended without releasing it (killed or crashed): it is taken over, and
:attr:`RunLock.stale_pid` says whose it was. A run that ends through Python
empties the file before unlocking. The file itself is never deleted (deleting
a locked file would let a third process lock a new file of the same name).
"""

import fcntl
import os
import time

LOCK_FILE = "run.lock"


class RunLockedError(Exception):
    """Another live process holds the directory's lock; the message names its pid."""

    def __init__(self, directory, pid):
        holder = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"another run ({holder}) is using {directory}; wait for it to "
                         "end, or choose another --output_dir")
        self.pid = pid


class LockLostError(Exception):
    """The locked directory was removed, moved or replaced while the lock was
    held: its lock file is no longer at its path. The message names it."""


class RunLock:
    """``RunLock(directory).acquire()`` locks ``directory/run.lock`` or raises
    :class:`RunLockedError`; :meth:`release` unlocks. Also a context manager."""

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_FILE)
        self.stale_pid = None
        self._fd = None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # The holder writes its pid right after locking: give it a moment.
            pid = _read_pid(fd, patience=1.0)
            os.close(fd)
            raise RunLockedError(self.directory, pid) from None
        try:
            # Any pid left there is a dead run's, even one equal to ours: a
            # container restarted after an OOM kill runs its command as pid 1 again.
            self.stale_pid = _read_pid(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)  # closing releases the flock
            raise
        self._fd = fd
        return self

    def check_in_place(self):
        """Raises :class:`LockLostError` if the held lock file is no longer at
        its path: its directory was removed, moved or replaced (or, for a
        relative path, the working directory was), so writes there would go
        nowhere or into a new directory no lock guards. Another failure to
        look (``PermissionError``) is raised as it is: the directory is there."""
        if self._fd is None:
            raise RuntimeError(f"the lock of {self.directory} is not held")
        held = os.fstat(self._fd)
        try:
            here = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            here = None
        if here is None or (here.st_dev, here.st_ino) != (held.st_dev, held.st_ino):
            where = self.directory
            if not os.path.isabs(where):
                try:
                    os.getcwd()
                except FileNotFoundError:
                    where += ", relative to a working directory that was removed,"
            raise LockLostError(f"{where} was moved or removed during the run (its "
                                f"{LOCK_FILE} is no longer there)")

    def release(self):
        """Empties the lock file (a clean end) and unlocks; idempotent."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # e.g. a read-only file system: the pid stays and reads as stale
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def _read_pid(fd, patience=0.0):
    """The pid written in the lock file, or ``None`` if it holds none (waiting
    up to ``patience`` seconds for one to appear)."""
    deadline = time.monotonic() + patience
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
