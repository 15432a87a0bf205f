"""host.run: the one command runner of the bake and the clone, exercised with real processes."""
import io
import time

import pytest

from host.run import Command, CommandFailed, concurrently, run


def test_run_returns_captured_stdout_and_keeps_stderr_apart():
    assert run(["sh", "-c", "echo out; echo err >&2"], capture=True) == "out\n"


def test_a_failure_names_the_command_its_exit_code_and_the_last_line_of_its_stderr():
    with pytest.raises(CommandFailed, match=r"^sh -c 'echo first >&2; echo second >&2; exit 3' failed "
                                            r"\(exit code 3\): second$") as failed:
        run(["sh", "-c", "echo first >&2; echo second >&2; exit 3"], capture=True)
    assert failed.value.rc == 3 and failed.value.argv[0] == "sh" and "first" in failed.value.stderr_tail


def test_a_missing_executable_is_not_found_127_not_an_exit_code():
    with pytest.raises(CommandFailed, match=r"failed \(not found: agentfleet-no-such-tool\)") as failed:
        run(["agentfleet-no-such-tool", "--version"])
    assert failed.value.rc == 127


def test_a_command_killed_by_a_signal_says_which_signal():
    with pytest.raises(CommandFailed, match=r"failed \(killed by SIGKILL\)") as failed:
        run(["sh", "-c", "kill -KILL $$"])
    assert failed.value.rc == -9


def test_a_command_over_its_timeout_is_killed_and_says_it_timed_out(tmp_path):
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(CommandFailed, match=r"failed \(timed out after 0.5 s, killed\)"):
        run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], capture=True, timeout=0.5)
    assert time.monotonic() - started < 10
    assert _zombie_or_gone(pid_file)


def test_the_child_is_killed_when_the_caller_fails_while_it_runs(tmp_path):
    """A log that raises (a full disk, a Ctrl-C) must not leave the command running behind the bake."""
    pid_file = tmp_path / "pid"

    class FailingLog(io.StringIO):
        def write(self, text):
            if "tick" in text:
                raise KeyboardInterrupt
            return super().write(text)

    with pytest.raises(KeyboardInterrupt):
        run(["sh", "-c", f"echo $$ > {pid_file}; echo tick; exec sleep 30"], log=FailingLog())
    assert _zombie_or_gone(pid_file)


def test_stdin_is_dev_null_so_a_command_that_reads_it_cannot_hang():
    assert run(["cat"], capture=True, timeout=10) == ""
    assert run(["cat"], capture=True, input_bytes=b"given\n") == "given\n"


def test_the_child_gets_only_allow_listed_variables_the_ca_and_proxy_ones_included(monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/corp-ca.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.lab:3128")
    monkeypatch.setenv("AGENTFLEET_TEST_SECRET", "must-not-leak")
    env = dict(line.split("=", 1) for line in run(["env"], capture=True).splitlines() if "=" in line)
    assert env["SSL_CERT_FILE"] == "/etc/ssl/corp-ca.pem" and env["HTTPS_PROXY"] == "http://proxy.lab:3128"
    assert "AGENTFLEET_TEST_SECRET" not in env and env["PATH"]
    assert run(Command(("sh", "-c", "echo $EXTRA"), env=(("EXTRA", "given"),)), capture=True) == "given\n"


def test_without_capture_the_output_streams_into_the_log_after_the_command_line(tmp_path):
    log = io.StringIO()
    assert run(Command(("sh", "-c", "echo one; echo two >&2"), cwd=str(tmp_path)), log=log) == ""
    assert log.getvalue() == "$ sh -c 'echo one; echo two >&2'\none\ntwo\n"


def test_run_refuses_a_shell_string():
    with pytest.raises(TypeError, match="argv list"):
        run("echo hi")
    with pytest.raises(TypeError, match="argv list"):
        run(Command("echo hi"))


def test_concurrently_runs_the_steps_side_by_side_and_returns_their_results_in_the_items_order():
    started = time.monotonic()
    out = concurrently(lambda s: run(["sh", "-c", f"sleep {s}; echo {s}"], capture=True).strip(), ["0.6", "0.1", "0.3"])
    assert out == ["0.6", "0.1", "0.3"]
    assert time.monotonic() - started < 0.6 + 0.1 + 0.3   # one after the other would take the sum


def test_concurrently_lets_every_step_end_then_raises_the_first_failure_in_the_items_order(tmp_path):
    """The caller's clean-up (the clone removing its partial disks) must see everything the steps did."""
    def step(item: str) -> str:
        if item == "slow-ok":
            run(["sh", "-c", f"sleep 0.5; touch {tmp_path / 'slow-ok'}"])
        elif item != "ok":
            run(["sh", "-c", f"sleep {0.2 if item == 'first' else 0}; echo {item} >&2; exit 3"], capture=True)
        return item

    with pytest.raises(CommandFailed, match=r"\(exit code 3\): first$"):
        concurrently(step, ["ok", "first", "second", "slow-ok"])
    assert (tmp_path / "slow-ok").exists()


def test_concurrently_runs_the_first_item_in_the_callers_thread_and_the_others_beside_it():
    """A libguestfs launch goes first: the appliance's processes stay with the thread that lives to the end."""
    import threading
    here = threading.current_thread().name
    assert concurrently(lambda _: threading.current_thread().name, ["only"]) == [here]
    names = concurrently(lambda _: (time.sleep(0.1), threading.current_thread().name)[1], ["a", "b", "c"])
    assert names[0] == here and here not in names[1:]


def _zombie_or_gone(pid_file) -> bool:
    try:
        stat = open(f"/proc/{pid_file.read_text().strip()}/stat").read()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
