"""The spool: durable, ordered, bounded (drops counted), and the seq counter that never skips or repeats."""
import json

from agentd.spool import Spool


def report(seq, state):
    return {"seq": seq, "spool": {"depth": state.depth, "dropped": state.dropped}}


def open_spool(tmp_path, max_reports=100):
    return Spool(str(tmp_path / "spool"), str(tmp_path / "state"), max_reports)


def test_reports_come_out_oldest_first_and_carry_the_spool_depth(tmp_path):
    spool = open_spool(tmp_path)
    made = [spool.append(report) for _ in range(3)]
    assert [r["seq"] for r in made] == [1, 2, 3]
    assert [r["spool"]["depth"] for r in made] == [0, 1, 2]
    seq, body = spool.oldest()
    assert seq == 1 and json.loads(body)["seq"] == 1
    spool.remove(1)
    assert spool.oldest()[0] == 2 and spool.state().depth == 2


def test_sequence_survives_a_restart_even_with_an_empty_spool(tmp_path):
    spool = open_spool(tmp_path)
    for _ in range(3):
        spool.append(report)
    for seq in (1, 2, 3):
        spool.remove(seq)
    assert open_spool(tmp_path).append(report)["seq"] == 4


def test_unsent_reports_survive_a_restart_in_order(tmp_path):
    spool = open_spool(tmp_path)
    for _ in range(3):
        spool.append(report)
    again = open_spool(tmp_path)
    assert len(again) == 3 and again.oldest()[0] == 1 and again.state().oldest_age_s >= 0


def test_seq_continues_after_the_highest_spooled_report_if_the_counter_lags(tmp_path):
    spool = open_spool(tmp_path)
    spool.append(report)
    spool.append(report)
    (tmp_path / "state/seq").write_text("1\n")  # as if killed between the report file and the counter
    assert open_spool(tmp_path).append(report)["seq"] == 3


def test_a_torn_temp_file_from_a_crash_is_discarded_not_sent(tmp_path):
    spool = open_spool(tmp_path)
    spool.append(report)
    (tmp_path / "spool" / ".00000000000000000002.json.tmp").write_text('{"seq": 2, "trunc')
    again = open_spool(tmp_path)
    assert len(again) == 1 and again.append(report)["seq"] == 2
    assert not list((tmp_path / "spool").glob(".*"))


def test_a_full_spool_drops_the_oldest_and_counts_it_durably(tmp_path):
    spool = open_spool(tmp_path, max_reports=3)
    for _ in range(5):
        spool.append(report)
    assert [seq for seq in spool._entries] == [3, 4, 5]
    assert spool.state().dropped == 2
    again = open_spool(tmp_path, max_reports=3)
    assert again.state().dropped == 2 and again.append(report)["spool"]["dropped"] == 2


def test_a_report_set_aside_moves_to_the_quarantine_counts_as_dropped_and_its_seq_is_never_reused(tmp_path):
    spool = open_spool(tmp_path)
    spool.append(report)
    body = spool.oldest()[1]
    where = spool.set_aside(1, "HTTP 422: seq: must be an integer")
    assert where == str(tmp_path / "spool/quarantine" / ("%020d.json" % 1))
    assert open(where, "rb").read() == body
    assert "HTTP 422" in (tmp_path / "spool/quarantine" / ("%020d.reason" % 1)).read_text()
    assert spool.state().dropped == 1 and spool.oldest() is None
    again = open_spool(tmp_path)  # the quarantine is not the spool: nothing to resend, and seq 1 stays used
    assert len(again) == 0 and again.state().dropped == 1 and again.append(report)["seq"] == 2


def test_the_quarantine_is_bounded_like_the_spool(tmp_path):
    spool = open_spool(tmp_path, max_reports=2)
    for seq in range(1, 5):
        spool.append(report)
        spool.set_aside(seq, "refused")
    assert sorted(p.name for p in (tmp_path / "spool/quarantine").iterdir()) == [
        "%020d.%s" % (seq, ext) for seq in (3, 4) for ext in ("json", "reason")]
    assert spool.state().dropped == 4
