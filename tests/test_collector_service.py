"""The collector as a service (collector/install.py): `install --root DIR` stages the user's files with safe modes,
idempotently, and the unit's ExecStart, run as written (only the staged paths moved under DIR), serves real reports.
No systemd is PID 1 here, so the service itself is not started by systemd; `systemd-analyze verify` checks the unit."""
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error

import pytest

from collector.install import UNIT_NAME, Layout

from .collector_server import ROOT, Collector, Webhook, free_port, report

ME = pwd.getpwuid(os.getuid()).pw_name
SECRET = b"service-test-secret-3f9a"


def install(root, *args, stdin=b"", check=True):
    out = subprocess.run([sys.executable, "-m", "collector", "install", "--root", str(root), "--no-useradd",
                          "--user", ME, *args], cwd=ROOT, input=stdin, capture_output=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr.decode()
    return out


def steps(out):
    return {(s["what"], s["path"]): s for s in json.loads(out.stdout)}


def mode(path):
    return oct(path.stat().st_mode & 0o777)


def staged(root, path):
    return root / str(path).lstrip("/")


@pytest.fixture
def hook_file(tmp_path):
    webhook = Webhook()
    path = tmp_path / "hook"
    path.write_text(webhook.url + "\n")
    path.chmod(0o600)
    yield webhook, path
    webhook.close()


def test_install_stages_user_files_with_safe_modes_and_never_prints_a_credential(tmp_path, hook_file):
    webhook, hook_path = hook_file
    root = tmp_path / "root"
    out = install(root, "--secret-from", "-", "--webhook-from", str(hook_path), "--json", stdin=SECRET + b"\n")
    lay = Layout()
    assert staged(root, lay.secret_file).read_bytes() == SECRET + b"\n"
    assert staged(root, lay.webhook_file).read_text() == webhook.url + "\n"
    assert mode(staged(root, lay.secret_file)) == mode(staged(root, lay.webhook_file)) == "0o600"
    assert mode(staged(root, lay.state_dir)) == mode(staged(root, lay.backup_dir)) == "0o750"
    assert mode(staged(root, lay.unit_file)) == "0o644"
    unit = staged(root, lay.unit_file).read_text()
    for text in (out.stdout, out.stderr, unit.encode()):
        assert SECRET not in text and webhook.url.encode() not in text and b"/hooks/" not in text
    assert {s["outcome"] for s in json.loads(out.stdout)} <= {"created", "unchanged"}
    assert "ran" not in out.stdout.decode()   # a staging tree: no systemctl


def test_install_again_changes_nothing_and_repairs_a_loosened_mode(tmp_path):
    root = tmp_path / "root"
    first = install(root, "--json")
    secret = staged(root, Layout().secret_file)
    generated = secret.read_bytes()
    assert len(generated.strip()) == 64 and "generated" in steps(first)[("secret", str(Layout().secret_file))]["note"]
    again = install(root, "--json")
    assert {s["outcome"] for s in json.loads(again.stdout)} == {"unchanged"}
    secret.chmod(0o644)
    repaired = install(root, "--json")
    assert steps(repaired)[("secret", str(Layout().secret_file))]["outcome"] == "updated"
    assert mode(secret) == "0o600" and secret.read_bytes() == generated   # kept, never regenerated


def test_dry_run_writes_nothing_and_says_what_it_would_do(tmp_path):
    root = tmp_path / "root"
    out = install(root, "--dry-run")
    assert not root.exists()
    assert "would create unit" in " ".join(out.stdout.decode().split())


@pytest.mark.parametrize("args,stdin,expected", [
    (["--webhook-from", "-"], b"not a url\n", "--webhook-from -: expected one http(s):// URL on one line"),
    (["--secret-from", "-", "--webhook-from", "-"], b"x", "standard input can carry only one of them"),
    (["--secret-from", "-"], b"\n", "--secret-from -: empty"),
])
def test_bad_credentials_are_one_line_and_change_nothing(tmp_path, args, stdin, expected):
    out = install(tmp_path / "root", *args, stdin=stdin, check=False)
    assert out.returncode == 2 and expected in out.stderr.decode()
    assert len(out.stderr.decode().strip().splitlines()) == 1 and not (tmp_path / "root").exists()


def test_root_needs_no_useradd(tmp_path):
    out = subprocess.run([sys.executable, "-m", "collector", "install", "--root", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "add --no-useradd" in out.stderr


def unit_service_section(path):
    section, values = None, {}
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            values[key] = value
    return values


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path):
    root = tmp_path / "root"
    install(root)
    unit = tmp_path / UNIT_NAME
    shutil.copy(staged(root, Layout().unit_file), unit)
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_units_execstart_as_written_serves_reports_stores_them_backs_up_and_alerts(tmp_path, hook_file):
    webhook, hook_path = hook_file
    root, port = tmp_path / "root", free_port()
    install(root, "--listen", f"127.0.0.1:{port}", "--secret-from", "-", "--webhook-from", str(hook_path),
            stdin=SECRET)
    lay = Layout()
    service = unit_service_section(staged(root, lay.unit_file))
    assert service["User"] == ME and "--webhook-url" not in service["ExecStart"]
    command = service["ExecStart"]
    for final in (str(lay.state_dir), str(lay.config_dir)):   # only what --root moved
        command = command.replace(final, str(staged(root, final)))
    argv = shlex.split(command)
    assert argv[0] == str(lay.python) and f"sqlite:///{staged(root, lay.db)}" in argv   # four slashes: absolute
    log = (tmp_path / "service.log").open("wb")
    process = subprocess.Popen(argv, cwd=service["WorkingDirectory"], stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    collector = Collector(f"http://127.0.0.1:{port}", "", SECRET, process, tmp_path / "service.log")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, collector.log()
            try:
                if collector.get("/healthz") == (200, {"status": "ok"}):
                    break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, collector.log()
            time.sleep(0.1)
        failing = [{"name": "disk", "status": "fail", "detail": "99%", "value": 99.0}]
        assert collector.post(report("athena", 1, checks=failing)) == (200, {"status": "stored"})
        assert collector.get("/api/v1/agents/athena")[1]["last_seq"] == 1
        assert staged(root, lay.db).is_file()
        assert any("athena" in m and "disk" in m for m in webhook.wait_for(1))
        deadline = time.monotonic() + 20
        while not list(staged(root, lay.backup_dir).glob("collector-*.db")):   # the first backup is due at start
            assert time.monotonic() < deadline, collector.log()
            time.sleep(0.1)
    finally:
        collector.stop(signal.SIGTERM)
        log.close()
    # uvicorn shuts down gracefully, then re-raises SIGTERM; systemd counts death by SIGTERM as a clean stop
    assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in collector.log()
    assert SECRET.decode() not in collector.log() and webhook.url not in collector.log()
