"""The agent's firewall as the clone writes it (fast): ufw's rule files byte for byte as ufw 0.36.1 writes them, the
inventory's `firewall_allow` and user-mode `forwards`, the files injected (and re-injected by --update) and the
forwards in the domain XML. tests/test_clone_day2_vm.py proves it in a real VM: a port not allowed is closed."""
import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy import firewall, inventory, payload
from deploy.domain import domain_xml, spec_for
from deploy.errors import CloneError
from deploy.fleet.remote_clone import host_inventory
from deploy.inject import Mkdir, WriteFile
from deploy.secrets import Secret
from deploy.state import mac_for, new_state
from deploy.update_diff import compare, render
from tests.clone_support import TEST_SCHEMA, clone_cli, load_inventory_with, publish, write_overlay, write_secrets

UFW = Path(__file__).parent / "data" / "ufw-0.36.1"     # what jammy's ufw itself wrote (README.md there)
SEED_TUPLES = ("### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n-A ufw-user-input -p tcp --dport 22 -j ACCEPT\n",
               "### tuple ### allow tcp 18789 0.0.0.0/0 any 0.0.0.0/0 in\n"
               "-A ufw-user-input -p tcp --dport 18789 -j ACCEPT\n")


def allow(*items):
    return tuple(firewall.parse_allow(i) for i in items)


def test_rules_are_byte_for_byte_what_ufw_0_36_1_writes_for_the_same_commands():
    extra = allow(8080, "8443/tcp", "5353/udp")
    assert firewall.user_rules(extra) == (UFW / "user.rules").read_text()
    assert firewall.user_rules(extra, v6=True) == (UFW / "user6.rules").read_text()


def test_the_seeds_ports_are_always_first_and_an_agents_own_never_repeat_them():
    seed_only = firewall.user_rules(())
    assert seed_only.count("### tuple ###") == 2 and "\n".join(SEED_TUPLES) in seed_only
    again = firewall.user_rules(allow("22/tcp", 9000, "9000"))
    assert again.count("### tuple ###") == 3 and "\n".join(SEED_TUPLES) in again
    assert again.index("--dport 18789") < again.index("--dport 9000")
    assert seed_only.startswith("*filter\n:ufw-user-input - [0:0]\n") and seed_only.endswith("COMMIT\n")


@pytest.mark.parametrize("value, rule", [(8080, "8080"), ("8080", "8080"), ("8443/tcp", "8443/tcp"),
                                         ("5353/udp", "5353/udp"), (1, "1"), ("65535/tcp", "65535/tcp")])
def test_allowed_ports_read_as_ufw_reads_them(value, rule):
    parsed = firewall.parse_allow(value)
    assert str(parsed) == rule and parsed.proto == ("any" if "/" not in rule else rule.split("/")[1])


@pytest.mark.parametrize("value", [0, 65536, "http", "8080/sctp", "8080:8090/tcp", " 8080", True, 80.0, None, [80]])
def test_anything_else_is_refused_with_one_line_naming_the_entry(tmp_path, value):
    with pytest.raises(CloneError) as err:
        load_inventory_with(tmp_path, {"agents": {"athena": {"firewall_allow": [8080, value]}}})
    message = str(err.value)
    assert f"agents.athena.firewall_allow[1]: {value!r} is not a port 1-65535" in message and "\n" not in message


def test_firewall_allow_defaults_to_none_and_must_be_a_list(tmp_path):
    inv = load_inventory_with(tmp_path, {"agents": {"apollo": {"firewall_allow": ["8443/tcp", 8080]}}})
    assert inv.agent("athena").firewall_allow == ()
    assert [str(r) for r in inv.agent("apollo").firewall_allow] == ["8443/tcp", "8080"]
    with pytest.raises(CloneError, match=r"agents.athena.firewall_allow: must be a list; YAML reads 8080 as an integ"):
        load_inventory_with(tmp_path, {"agents": {"athena": {"firewall_allow": 8080}}})


def _user_mode(tmp_path, **athena) -> Path:
    overlay = write_overlay(tmp_path / "overlay.yaml", work=tmp_path, images_dir=tmp_path / "images",
                            secrets_file=write_secrets(tmp_path / "secrets.yaml", ["athena", "apollo"]),
                            collector_port=18000)
    data = yaml.safe_load(overlay.read_text())
    data["agents"]["athena"].update(athena)
    overlay.write_text(yaml.safe_dump(data))
    return overlay


def test_forwards_go_into_the_domain_xml_on_loopback_only(tmp_path):
    inv = inventory.load(None, [_user_mode(tmp_path, forwards={"18080": 8080, 18081: "8081"})])
    athena = inv.agent("athena")
    assert athena.forwards == ((18080, 8080), (18081, 8081))
    xml = domain_xml(spec_for(inv, athena, uuid="0" * 32, mac=mac_for("athena"), root_disk=Path("/r.qcow2"),
                              data_disk=Path("/d.qcow2"), console_log=Path("/c.log"), domain_type="qemu"))
    assert (f"hostfwd=tcp:127.0.0.1:{athena.ssh_port}-10.0.2.15:22,hostfwd=tcp:127.0.0.1:18080-10.0.2.15:8080,"
            f"hostfwd=tcp:127.0.0.1:18081-10.0.2.15:8081,guestfwd=") in xml
    assert xml.count("hostfwd=") == 3 and "hostfwd=tcp::" not in xml and "0.0.0.0" not in xml
    apollo = domain_xml(spec_for(inv, inv.agent("apollo"), uuid="0" * 32, mac=mac_for("apollo"), root_disk=Path("/r"),
                                 data_disk=Path("/d"), console_log=Path("/c"), domain_type="qemu"))
    assert apollo.count("hostfwd=") == 1                # none given: SSH only, as before


@pytest.mark.parametrize("forwards, message", [
    ({"18080": "http"}, "agents.athena.forwards: '18080': 'http' is not host port: guest port"),
    ({70000: 8080}, "agents.athena.forwards: 70000: 8080 is not host port: guest port"),
    ({"22200": 8080}, "agents.athena.forwards.22200: host port 22200 is also agents.athena.ssh_port"),
    ({"22201": 8080}, "agents.apollo.ssh_port: host port 22201 is also agents.athena.forwards.22201"),
    ([18080, 8080], "agents.athena.forwards: must be a mapping"),
])
def test_bad_forwards_are_refused_naming_the_entry(tmp_path, forwards, message):
    with pytest.raises(CloneError) as err:
        inventory.load(None, [_user_mode(tmp_path, forwards=forwards)])
    assert message in str(err.value)


def test_forwards_are_refused_on_the_bridge_where_the_agents_own_ip_is_reached(tmp_path):
    with pytest.raises(CloneError, match=r"agents.athena.forwards: only in network.mode user .* firewall_allow"):
        load_inventory_with(tmp_path, {"agents": {"athena": {"forwards": {"18080": 8080}}}})


def _ops(tmp_path, *ports):
    inv = load_inventory_with(tmp_path, {"agents": {"athena": {"firewall_allow": list(ports)}}})
    manifest = type("M", (), {"services": ("agentd",), "openclaw_plugins": ()})()
    image = type("Image", (), {"version": "v1", "manifest": manifest})()
    secrets = {"collector_secret": Secret("s")}
    return payload.agent_ops(inv, inv.agent("athena"), image, new_state("athena", tmp_path / "d.qcow2"), secrets, [])


def test_the_clone_injects_both_rule_files_as_ufw_keeps_them(tmp_path):
    ops = {op.path: op for op in _ops(tmp_path, 8080)}
    assert ops["/etc/ufw"] == Mkdir("/etc/ufw", 0o755)
    v4, v6 = ops[firewall.USER_RULES], ops[firewall.USER6_RULES]
    assert isinstance(v4, WriteFile) and (v4.mode, v4.owner, v6.mode) == (0o640, "root:root", 0o640)
    assert "--dport 8080" in v4.data().decode() and "-A ufw6-user-input -p udp --dport 8080" in v6.data().decode()


def test_an_update_rewrites_the_rules_so_a_removed_port_is_closed(tmp_path):
    before = {op.path: op.data() for op in _ops(tmp_path, 8080, "8081/tcp") if isinstance(op, WriteFile)}
    baseline = {p: {"sha256": hashlib.sha256(d).hexdigest(), "mode": "0640", "owner": "root:root"}
                for p, d in before.items() if p.startswith("/etc/ufw/")}
    guest = {p: d for p, d in before.items() if p.startswith("/etc/ufw/")}
    after = tuple(op for op in _ops(tmp_path, "8081/tcp") if op.path.startswith("/etc/ufw/"))
    text = "\n".join(render(compare(after, baseline, guest)))
    assert f"changed   {firewall.USER_RULES}" in text and f"changed   {firewall.USER6_RULES}" in text
    assert "--dport 8080" not in next(op for op in after if op.path == firewall.USER_RULES).data().decode()
    assert "--dport 8081" in next(op for op in after if op.path == firewall.USER_RULES).data().decode()
    assert "-### tuple ### allow any 8080" in text        # the diff the operator reads before the update


def test_dry_run_lists_the_rule_files(tmp_path):
    img = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "16M"], check=True)
    publish(img, tmp_path / "images", "v1", TEST_SCHEMA)
    overlay = _user_mode(tmp_path, firewall_allow=["8443/tcp"], forwards={"18443": 8443})
    proc = clone_cli("--overlay", str(overlay), "athena", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"file  {firewall.USER_RULES} 0640 root:root" in proc.stdout
    assert f"file  {firewall.USER6_RULES} 0640 root:root" in proc.stdout
    assert "    -A ufw-user-input -p tcp --dport 8443 -j ACCEPT" in proc.stdout
    assert "hostfwd=tcp:127.0.0.1:18443-10.0.2.15:8443" in proc.stdout


def test_the_fleet_tool_passes_an_agents_ports_and_forwards_to_its_host(tmp_path):
    inv = inventory.load(None, [_user_mode(tmp_path, firewall_allow=[8080, "5353/udp"], forwards={"18080": 8080})])
    sent = host_inventory(inv, inv.hosts["local"])
    assert sent["agents"]["athena"]["firewall_allow"] == ["8080", "5353/udp"]
    assert sent["agents"]["athena"]["forwards"] == {"18080": 8080}
    assert "firewall_allow" not in sent["agents"]["apollo"] and "forwards" not in sent["agents"]["apollo"]
    again = inventory.parse(sent, base_dir=Path("/"))
    assert again.agent("athena").firewall_allow == inv.agent("athena").firewall_allow
    assert again.agent("athena").forwards == inv.agent("athena").forwards
