"""tests/preloaded.py: a forked child behaves as the interpreter it stands for."""

import json
import os
import signal
import time

import preloaded


def test_a_script_has_its_own_argv_environment_directory_and_exit_status(tmp_path):
    script = ("import json, os, sys\n"
              "print(json.dumps([sys.argv, os.environ.get('CHOSEN'), os.getcwd()]))\n"
              "sys.exit(3)")
    result = preloaded.run_code(script, ["a", 1], env={**os.environ, "CHOSEN": "yes"},
                                cwd=tmp_path, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    assert json.loads(result.stdout) == [["-c", "a", "1"], "yes", str(tmp_path)]
    # The next child does not see the first one's environment.
    assert preloaded.run_code("import os; print(os.environ.get('CHOSEN'))",
                              timeout=120).stdout == "None\n"


def test_a_script_file_runs_as_main_with_its_directory_on_the_path(tmp_path):
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "helper.py").write_text("WHERE = 'beside the script'\n")
    (tmp_path / "tools" / "script.py").write_text(
        "import json, sys\nimport helper\n"
        "if __name__ == '__main__':\n"
        "    print(json.dumps([sys.argv, helper.WHERE]))\n")
    result = preloaded.run_script("tools/script.py", ["--flag=1"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [["tools/script.py", "--flag=1"], "beside the script"]


def test_an_uncaught_error_prints_its_traceback_and_exits_1():
    result = preloaded.run_code("raise ValueError('on purpose')", timeout=120)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: on purpose" in result.stderr


def test_a_message_given_to_sys_exit_goes_to_stderr_with_status_1():
    result = preloaded.run_code("import sys; sys.exit('stopped')", timeout=120)
    assert (result.returncode, result.stderr) == (1, "stopped\n")


def test_a_killed_child_has_the_negative_signal_number_as_popen_gives_it():
    child = preloaded.launch_code("import time; print('started', flush=True); time.sleep(120)")
    deadline = time.monotonic() + 60
    while child.poll() is None and time.monotonic() < deadline:
        with open(child._paths.stdout) as stdout:   # pylint: disable=protected-access
            if "started" in stdout.read():
                break
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGTERM


def test_an_uncaught_keyboard_interrupt_ends_the_child_by_sigint():
    result = preloaded.run_code("raise KeyboardInterrupt", timeout=120)
    assert result.returncode == -signal.SIGINT and "KeyboardInterrupt" in result.stderr


def test_atexit_handlers_and_threads_finish_before_the_child_exits():
    script = ("import atexit, threading, time\n"
              "atexit.register(print, 'atexit ran')\n"
              "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))).start()")
    result = preloaded.run_code(script, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "thread done\natexit ran\n"


def test_children_start_tensorflow_themselves():
    # Logical CPUs can only be configured before TensorFlow's runtime starts.
    script = ("import json, tensorflow as tf\n"
              "cpu = tf.config.list_physical_devices('CPU')[0]\n"
              "logical = [tf.config.LogicalDeviceConfiguration()] * 3\n"
              "tf.config.set_logical_device_configuration(cpu, logical)\n"
              "print(json.dumps(len(tf.config.list_logical_devices('CPU'))))")
    result = preloaded.run_code(script, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == 3
