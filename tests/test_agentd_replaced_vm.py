"""A replaced (or rolled-back) VM has agentd state younger than the agent: the real collector must still take its
reports, which it would drop as duplicates if the new VM numbered them from 1 again."""
import json

import pytest

from tests.agentd_fixtures import Collector, make_vm_tree, run_agentd


@pytest.fixture
def collector(tmp_path):
    c = Collector(tmp_path)
    c.start()
    yield c
    c.stop()


def as_image(root, version: str) -> None:
    for name in ("image.json", "identity.json"):
        path = root / "etc/agentfleet" / name
        data = json.loads(path.read_text())
        data["version" if name == "image.json" else "image_version"] = version
        path.write_text(json.dumps(data))


def test_a_new_root_disk_numbers_above_the_collector_and_a_rollback_above_the_new_one(tmp_path, collector):
    old, new = tmp_path / "old-root", tmp_path / "new-root"
    for root in (old, new):
        make_vm_tree(root, collector_url=collector.url)
    as_image(new, "v2new")
    for _ in range(3):
        assert run_agentd("--once", root=old).returncode == 0
    assert collector.stored_seqs("athena") == [1, 2, 3]

    replaced = run_agentd("--once", root=new)  # fresh /var/lib/agentd, as after --replace
    assert replaced.returncode == 0, replaced.stderr
    assert collector.stored_seqs("athena") == [1, 2, 3, 4]
    state = collector.agent("athena")
    assert (state["image_version"], state["last_seq"]) == ("v2new", 4)
    assert (new / "var/lib/agentd/seq").read_text().strip() == "4", "numbering goes on from there at the next start"

    assert run_agentd("--once", root=old).returncode == 0  # the old root disk again, as after a rollback
    assert collector.stored_seqs("athena") == [1, 2, 3, 4, 5]
    assert collector.agent("athena")["image_version"] == "v1abc"


def test_without_an_answer_from_the_collector_agentd_still_reports_from_its_own_counter(tmp_path):
    make_vm_tree(tmp_path, collector_url="http://127.0.0.1:9")  # nothing listens: the report is spooled
    assert run_agentd("--once", root=tmp_path).returncode == 0
    assert [p.name[-9:] for p in (tmp_path / "var/lib/agentd/spool").glob("*.json")] == ["0001.json"]
