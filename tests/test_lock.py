"""The output directory's lock: one holder, its pid named, stale locks taken over."""

import os
import pathlib
import subprocess
import sys

import pytest

from sgan_keras import lock

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    with lock.RunLock(tmp_path) as first:
        assert (tmp_path / lock.LOCK_FILE).read_text().strip() == str(os.getpid())
        # flock locks belong to an open file description: a second one conflicts,
        # even in the same process.
        with pytest.raises(lock.RunLockedError, match=rf"another run \(pid {os.getpid()}\)"):
            lock.RunLock(tmp_path).acquire()
        assert first.stale_pid is None
    # A clean release empties the file, so the next holder sees no stale pid.
    assert (tmp_path / lock.LOCK_FILE).read_text() == ""
    with lock.RunLock(tmp_path) as again:
        assert again.stale_pid is None


def test_a_lock_whose_process_died_is_taken_over(tmp_path):
    # A process locks the directory and is killed without releasing it.
    script = ("import os, sys; from sgan_keras import lock; lock.RunLock(sys.argv[1]).acquire(); "
              "os.kill(os.getpid(), 9)")
    process = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT)
    assert process.returncode == -9
    dead_pid = int((tmp_path / lock.LOCK_FILE).read_text())
    with lock.RunLock(tmp_path) as taken:
        assert taken.stale_pid == dead_pid
        assert (tmp_path / lock.LOCK_FILE).read_text().strip() == str(os.getpid())


def test_a_dead_runs_pid_equal_to_ours_is_still_reported(tmp_path):
    """In a container the command runs as pid 1 on every restart: a lock left
    by a killed run may name the new run's own pid, and is still a take-over."""
    (tmp_path / lock.LOCK_FILE).write_text(f"{os.getpid()}\n")     # unlocked: its run died
    with lock.RunLock(tmp_path) as taken:
        assert taken.stale_pid == os.getpid()


@pytest.mark.parametrize("change", ["moved", "removed", "replaced", "working directory removed"])
def test_a_held_lock_knows_when_its_directory_went_away(tmp_path, monkeypatch, change):
    """``check_in_place`` passes while the lock file is where it was locked and
    raises once its directory was moved, removed or replaced by another of
    that name, or a relative one's working directory was removed."""
    working = tmp_path / "working"
    (working / "run").mkdir(parents=True)
    monkeypatch.chdir(working)
    held = lock.RunLock("run").acquire()
    try:
        held.check_in_place()
        if change == "moved":
            os.rename("run", "moved")
        elif change == "removed":
            os.remove("run/run.lock")
            os.rmdir("run")
        elif change == "replaced":
            os.rename("run", "moved")
            os.mkdir("run")
            open("run/run.lock", "w").close()
        else:
            os.chdir(tmp_path)
            os.rename(working, tmp_path / "elsewhere")   # keeps the lock's file alive
            os.mkdir(working)
            os.chdir(working)
            os.rmdir(working)
        hint = ", relative to a working directory that was removed," * (change.startswith("w"))
        with pytest.raises(lock.LockLostError,
                           match=f"^run{hint} was moved or removed during the run "
                                 r"\(its run\.lock is no longer there\)$"):
            held.check_in_place()
    finally:
        monkeypatch.chdir(tmp_path)
        held.release()


def test_a_lock_that_cannot_be_looked_at_is_not_called_lost(tmp_path, monkeypatch):
    """A ``stat`` refused for another reason (a directory made unreadable) is
    raised as it is, to be named as what it is; a released lock is not checked."""
    held = lock.RunLock(tmp_path).acquire()

    def refused(path):
        raise PermissionError(13, "Permission denied", path)
    with monkeypatch.context() as patch:
        patch.setattr(lock.os, "stat", refused)
        with pytest.raises(PermissionError):
            held.check_in_place()
    held.release()
    with pytest.raises(RuntimeError, match="is not held"):
        held.check_in_place()
