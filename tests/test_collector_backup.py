"""Online backups (collector/backup.py) taken by the running collector on its own schedule, and `restore`
(collector/restore.py): validated first, refused under a running collector, and a restored database serves again."""
import json
import sqlite3
import subprocess
import sys
import time

import pytest

from collector.backup import BackupPolicy, backup_once, backups, seconds_until_due

from .collector_server import ROOT, report, running_collector, start_collector


def collector_cli(*args):
    return subprocess.run([sys.executable, "-m", "collector", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def backup_holding(backup_dir, agents, timeout=20.0):
    """The first backup the collector's schedule takes that holds `agents` (name -> last seq)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in backups(backup_dir):
            try:
                if agents_in(path) == agents:
                    return path
            except sqlite3.Error:   # pruned while we looked
                pass
        time.sleep(0.05)
    raise AssertionError(f"no backup holding {agents}: {sorted(p.name for p in backup_dir.iterdir())}")


def agents_in(path):
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT agent, last_seq FROM agents").fetchall())


@pytest.fixture
def live_db(tmp_path):
    """A collector database with athena at seq 2, as the collector wrote it (WAL mode)."""
    with running_collector(tmp_path / "c") as c:
        for seq in (1, 2):
            assert c.post(report("athena", seq))[0] == 200
    return tmp_path / "c" / "collector.db"


def test_a_backup_is_a_whole_self_contained_copy_and_only_the_newest_are_kept(live_db, tmp_path):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    (backup_dir / "collector-20000101T000000.000Z.db.partial").write_bytes(b"half a backup from a crash")
    policy = BackupPolicy(live_db, backup_dir, every_s=3600, keep=2)
    done = [backup_once(policy, now=1_700_000_000 + i) for i in range(3)]
    assert [p.name for p in backups(backup_dir)] == ["collector-20231114T221322.000Z.db",
                                                     "collector-20231114T221321.000Z.db"]
    assert done[2].pruned == (backup_dir / "collector-20231114T221320.000Z.db",)
    assert sorted(p.name for p in backup_dir.iterdir()) == [p.name for p in reversed(backups(backup_dir))]
    newest = backups(backup_dir)[0]
    assert agents_in(newest) == {"athena": 2} and oct(newest.stat().st_mode & 0o777) == "0o600"
    with sqlite3.connect(newest) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_restarted_collector_waits_for_the_next_period_before_backing_up_again(live_db, tmp_path):
    policy = BackupPolicy(live_db, tmp_path, every_s=600, keep=3)
    assert seconds_until_due(policy, time.time()) == 0
    backup_once(policy)
    assert 590 < seconds_until_due(policy, time.time()) <= 600


def test_the_running_collector_backs_up_on_its_schedule_while_it_stores_reports(tmp_path):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    with running_collector(tmp_path, "--backup-dir", str(backup_dir), "--backup-every-s", "0.3",
                           "--backup-keep", "2") as c:
        for seq in range(1, 21):
            assert c.post(report("athena", seq))[0] == 200
        backup_holding(backup_dir, {"athena": 20})
        time.sleep(1.0)
        log = c.log()
    # stopped: a backup in progress was finished, not left half-written (checked while it runs, a backup every
    # 0.3 s can be mid-write at any look)
    assert len(backups(backup_dir)) == 2          # the newest two, older ones removed
    assert not list(backup_dir.glob("*.partial"))
    assert "backup: " in log


def test_backups_are_refused_for_postgresql_and_need_an_existing_directory(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s")
    secret.chmod(0o600)
    for db, backup_dir, expected in [
            ("postgresql://u@127.0.0.1:1/db", tmp_path, "backups are of a SQLite database; back PostgreSQL up with"),
            (f"sqlite:///{tmp_path}/c.db", tmp_path / "nope", f"--backup-dir {tmp_path}/nope: no such directory")]:
        out = collector_cli("serve", "--db", db, "--secret-file", str(secret), "--backup-dir", str(backup_dir))
        assert out.returncode == 2 and out.stderr.strip() == f"collector: {out.stderr.strip()[11:]}"
        assert expected in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_restore_brings_back_the_backup_and_keeps_the_database_it_replaced(tmp_path):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    work = tmp_path / "c"
    c = start_collector(work, "--backup-dir", str(backup_dir), "--backup-every-s", "0.2", "--backup-keep", "1000")
    try:
        assert c.post(report("athena", 1))[0] == 200
        backup = backup_holding(backup_dir, {"athena": 1})
        for seq in (2, 3):
            assert c.post(report("athena", seq))[0] == 200
        refused = collector_cli("restore", str(backup), "--db", c.db_url)
        assert refused.returncode == 2
        assert "a collector is running on it" in refused.stderr and "stop it first" in refused.stderr
    finally:
        c.stop()
    db = work / "collector.db"
    dry = collector_cli("restore", str(backup), "--db", c.db_url, "--dry-run", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["dry_run"] is True
    assert agents_in(db) == {"athena": 3}
    done = collector_cli("restore", str(backup), "--db", c.db_url)
    assert done.returncode == 0, done.stderr
    assert f"restored {db} from {backup} (1 agents, 1 reports" in done.stdout
    kept = sorted(work.glob("collector.db.before-restore-*"))   # the database with its -wal and -shm, if any
    assert kept[0].name.endswith("Z") and agents_in(kept[0])["athena"] == 3
    with running_collector(work) as again:            # the restored database serves
        status, athena = again.get("/api/v1/agents/athena")
        assert status == 200 and athena["last_seq"] == 1
        assert again.post(report("athena", 4))[0] == 200
        assert again.get("/api/v1/agents/athena")[1]["gap"]["reason"] == "not_in_this_database"


def test_restore_refuses_a_corrupt_or_foreign_backup_and_changes_nothing(live_db, tmp_path):
    corrupt = tmp_path / "corrupt.db"
    backup_once(BackupPolicy(live_db, tmp_path, 3600, 5))
    good = backups(tmp_path)[0]
    with sqlite3.connect(good) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'reports_received_at'").fetchone()[0]
    data = bytearray(good.read_bytes())
    start = (root - 1) * page_size + 8                      # past the b-tree page header: its cell pointers
    data[start:start + 64] = b"\xff" * 64
    corrupt.write_bytes(bytes(data))
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    before = live_db.read_bytes()
    url = f"sqlite:///{live_db}"
    for backup, expected in [(corrupt, "not restored"), (foreign, "not a collector database (no table agents)"),
                             (tmp_path / "missing.db", "no such file")]:
        out = collector_cli("restore", str(backup), "--db", url)
        assert out.returncode == 2 and expected in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert live_db.read_bytes() == before and not list(live_db.parent.glob("*.before-restore-*"))


def test_restore_is_for_sqlite_only(tmp_path):
    out = collector_cli("restore", str(tmp_path / "x.db"), "--db", "postgresql://u@h/db")
    assert out.returncode == 2 and "PostgreSQL: pg_restore" in out.stderr
