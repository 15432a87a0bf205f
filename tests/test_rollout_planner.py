"""The rollout planner on the seed's fleet (8 agents on 5 hosts, deploy/fleet.yaml): pure, no I/O."""
import copy

import pytest
import yaml

from deploy import inventory as inventory_mod
from deploy.rollout import RolloutError, RolloutOptions, Size, add_arguments, plan
from deploy.rollout.options import options_from_args
from deploy.rollout.planner import Plan

OLD, NEW = "old111111111", "new222222222"


def seed_data() -> dict:
    return yaml.safe_load(inventory_mod.DEFAULT_INVENTORY.read_text())


def inventory(data=None):
    return inventory_mod.parse(data or seed_data(), base_dir=inventory_mod.DEFAULT_INVENTORY.parent,
                               sources=(str(inventory_mod.DEFAULT_INVENTORY),))


def everyone_on(inv, version, **others):
    return {**{a: version for a in inv.agents}, **others}


def waves(p: Plan) -> list[list[str]]:
    return [list(w.agents) for w in p.waves]


def test_default_plan_is_one_canary_that_is_not_athena_then_waves_of_a_quarter_with_athena_last():
    inv = inventory()
    p = plan(inv, NEW, everyone_on(inv, OLD), RolloutOptions())
    assert waves(p) == [["apollo"], ["artemis", "hermes"], ["perseus", "prometheus"], ["ares", "poseidon"],
                        ["athena"]]
    assert p.waves[0].canary and not any(w.canary for w in p.waves[1:])
    assert dict(p.waves[3].hosts) == {"r820": ("ares", "poseidon")}
    assert p.skipped == ()


def test_canary_is_the_orchestrator_only_when_asked():
    inv = inventory()
    p = plan(inv, NEW, everyone_on(inv, OLD), RolloutOptions(canary_orchestrator=True))
    assert waves(p)[0] == ["athena"]
    with pytest.raises(RolloutError, match="no canary candidate.*athena.*--canary-orchestrator"):
        plan(inv, NEW, everyone_on(inv, OLD), RolloutOptions(agents=("athena",)))
    assert waves(plan(inv, NEW, everyone_on(inv, OLD), RolloutOptions(agents=("athena",), canary=0))) == [["athena"]]


def test_several_canaries_are_spread_over_distinct_hosts():
    inv = inventory()
    p = plan(inv, NEW, everyone_on(inv, OLD), RolloutOptions(canary=3))
    assert waves(p)[0] == ["apollo", "hermes", "perseus"]


def test_wave_sizes_follow_ansible_serial_with_the_last_size_repeating():
    inv = inventory()
    opts = RolloutOptions(canary=0, waves=(Size(count=1), Size(percent=25), Size(percent=100)))
    assert [len(w) for w in waves(plan(inv, NEW, everyone_on(inv, OLD), opts))] == [1, 2, 5]
    opts = RolloutOptions(canary=1, waves=(Size(count=3),))
    assert [len(w) for w in waves(plan(inv, NEW, everyone_on(inv, OLD), opts))] == [1, 3, 3, 1]
    # a share rounds down but never below one agent
    opts = RolloutOptions(canary=0, waves=(Size(percent=10),))
    assert [len(w) for w in waves(plan(inv, NEW, everyone_on(inv, OLD), opts))] == [1] * 8


def test_max_unavailable_caps_every_wave_the_canary_included():
    inv = inventory()
    opts = RolloutOptions(canary=3, waves=(Size(percent=100),), max_unavailable=Size(count=2))
    assert [len(w) for w in waves(plan(inv, NEW, everyone_on(inv, OLD), opts))] == [2, 2, 2, 2]


def test_scope_limits_to_the_named_agents_and_hosts():
    inv = inventory()
    p = plan(inv, NEW, everyone_on(inv, OLD), RolloutOptions(hosts=("r820",)))
    assert p.scope == ("prometheus", "ares", "poseidon")
    assert waves(p) == [["prometheus"], ["ares"], ["poseidon"]]   # 25 % of 3 rounds down to 1
    opts = RolloutOptions(agents=("hermes", "ares", "apollo"), hosts=("r820", "r8202"))
    p = plan(inv, NEW, everyone_on(inv, OLD), opts)
    assert p.scope == ("hermes", "ares")
    with pytest.raises(RolloutError, match="--agents: unknown agent.*zeus"):
        plan(inv, NEW, {}, RolloutOptions(agents=("zeus",)))
    with pytest.raises(RolloutError, match="--hosts: unknown host.*r999"):
        plan(inv, NEW, {}, RolloutOptions(hosts=("r999",)))
    with pytest.raises(RolloutError, match="holds no agent"):
        plan(inv, NEW, {}, RolloutOptions(agents=("athena",), hosts=("r820",)))


def test_agents_already_on_the_target_are_skipped_and_a_fleet_all_on_it_has_no_wave():
    inv = inventory()
    p = plan(inv, NEW, everyone_on(inv, OLD, apollo=NEW, ares=NEW), RolloutOptions())
    assert p.skipped == ("apollo", "ares")
    assert "apollo" not in sum(waves(p), []) and "ares" not in sum(waves(p), [])
    assert waves(p)[0] == ["artemis"]
    assert sorted(sum(waves(p), [])) == sorted(set(inv.agents) - {"apollo", "ares"})
    assert plan(inv, NEW, everyone_on(inv, NEW), RolloutOptions()).waves == ()
    # an agent the collector never saw is planned (it is not known to run the target)
    assert "hermes" in sum(waves(plan(inv, NEW, everyone_on(inv, NEW, hermes=None), RolloutOptions())), [])


def test_a_host_without_ram_headroom_never_replaces_two_of_its_agents_in_one_wave():
    data = seed_data()
    data["hosts"]["r820"]["ram_gb"] = 56     # 48 GB placed: 8 GB free, less than two new 16 GB VMs
    inv = inventory(data)
    p = plan(inv, NEW, everyone_on(inv, OLD), RolloutOptions(canary=0, waves=(Size(percent=100),)))
    for w in p.waves:
        assert len(dict(w.hosts).get("r820", ())) <= 1
    assert [len(w) for w in waves(p)] == [6, 1, 1]
    # the seed's hosts all have the room: r820 (80 GB free) replaces its three at once, r710 (32 GB) its two
    seed = inventory()
    p = plan(seed, NEW, everyone_on(seed, OLD), RolloutOptions(canary=0, waves=(Size(percent=100),)))
    assert sorted(waves(p)[0]) == sorted(seed.agents) and len(p.waves) == 1


def test_plan_round_trips_through_the_journal_json():
    inv = inventory()
    p = plan(inv, NEW, everyone_on(inv, OLD, ares=NEW), RolloutOptions())
    assert Plan.from_json(copy.deepcopy(p.to_json())) == p
    assert "wave 0 (canary): 1 agent(s) - r710: apollo" in p.render()


def test_flags_parse_into_options_and_bad_sizes_are_one_line_errors():
    import argparse
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    opts = options_from_args(parser.parse_args(["--canary", "2", "--waves", "1,25%,100%", "--max-unavailable", "50%",
                                                "--min-healthy", "30", "--hosts", "r710,r820", "--revert-wave"]))
    assert opts.canary == 2 and [str(w) for w in opts.waves] == ["1", "25%", "100%"]
    assert str(opts.max_unavailable) == "50%" and opts.min_healthy_s == 30 and opts.hosts == ("r710", "r820")
    assert opts.revert_wave and not opts.dry_run
    for bad in (["--waves", "0"], ["--waves", "150%"], ["--waves", "two"], ["--max-unavailable", "-1"]):
        with pytest.raises(RolloutError, match="not a positive count"):
            options_from_args(parser.parse_args(bad))
