"""The agent's host firewall, as ufw 0.36.1 (Ubuntu 22.04's) stores its rules: /etc/ufw/user.rules and user6.rules.

The image has ufw on from the first boot with incoming denied and outgoing allowed (images/elements/firewall); the
clone writes the rules: the seed's 22/tcp (SSH) and 18789/tcp (OpenClaw's dashboard), then the agent's own
`firewall_allow` from the inventory, in that order. The text is byte for byte what `ufw allow 22/tcp`, ... write on
a fresh jammy install with ufw's default logging (low): `ufw status` in the VM reads the `### tuple ###` lines, and
ufw.service loads the rest with iptables-restore at boot. tests/data/ufw-0.36.1/ holds ufw's own output to compare.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

USER_RULES = "/etc/ufw/user.rules"
USER6_RULES = "/etc/ufw/user6.rules"
PROTOCOLS = ("tcp", "udp")
ALLOW_RULE = re.compile(r"(?P<port>[0-9]{1,5})(?:/(?P<proto>tcp|udp))?")
ALLOW_FORMS = "a port 1-65535 (tcp and udp, as `ufw allow 8080`), 'PORT/tcp' or 'PORT/udp'"


@dataclass(frozen=True)
class Allow:
    """One incoming port opened: `proto` "tcp", "udp", or "any" (both, as ufw reads a bare port)."""
    port: int
    proto: str = "tcp"

    def __str__(self) -> str:
        return str(self.port) if self.proto == "any" else f"{self.port}/{self.proto}"


SEED_ALLOW = (Allow(22, "tcp"), Allow(18789, "tcp"))   # the seed's rules: SSH and the OpenClaw dashboard


def parse_allow(value: Any) -> Allow:
    """`8080` (tcp and udp), `"8080"`, `"8443/tcp"` or `"5353/udp"`; ValueError naming the accepted forms otherwise
    (ranges and services names are not taken: one port per entry keeps the generated rules simple to check)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{value!r} is not {ALLOW_FORMS}")
    match = ALLOW_RULE.fullmatch(str(value))
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"{value!r} is not {ALLOW_FORMS}")
    return Allow(int(match["port"]), match["proto"] or "any")


def allowed(extra: Sequence[Allow]) -> tuple[Allow, ...]:
    """The seed's rules, then the agent's own in inventory order (one already there is left out, as ufw skips an
    existing rule)."""
    out: list[Allow] = []
    for rule in (*SEED_ALLOW, *extra):
        if rule not in out:
            out.append(rule)
    return tuple(out)


def user_rules(extra: Sequence[Allow], v6: bool = False) -> str:
    """/etc/ufw/user.rules (or user6.rules with `v6`) allowing the seed's ports and `extra`."""
    chain, anywhere = ("ufw6", "::/0") if v6 else ("ufw", "0.0.0.0/0")
    chains = ("user-input", "user-output", "user-forward", "before-logging-input", "before-logging-output",
              "before-logging-forward", "user-logging-input", "user-logging-output", "user-logging-forward",
              "after-logging-input", "after-logging-output", "after-logging-forward", "logging-deny",
              "logging-allow", "user-limit", "user-limit-accept")
    lines = ["*filter", *(f":{chain}-{name} - [0:0]" for name in chains), "### RULES ###", ""]
    for rule in allowed(extra):
        lines.append(f"### tuple ### allow {rule.proto} {rule.port} {anywhere} any {anywhere} in")
        for proto in (PROTOCOLS if rule.proto == "any" else (rule.proto,)):
            lines.append(f"-A {chain}-user-input -p {proto} --dport {rule.port} -j ACCEPT")
        lines.append("")
    limit = "-m limit --limit 3/min --limit-burst 10"
    lines += [
        "### END RULES ###", "",
        "### LOGGING ###",
        f'-A {chain}-after-logging-input -j LOG --log-prefix "[UFW BLOCK] " {limit}',
        f'-A {chain}-after-logging-forward -j LOG --log-prefix "[UFW BLOCK] " {limit}',
        f"-I {chain}-logging-deny -m conntrack --ctstate INVALID -j RETURN {limit}",
        f'-A {chain}-logging-deny -j LOG --log-prefix "[UFW BLOCK] " {limit}',
        f'-A {chain}-logging-allow -j LOG --log-prefix "[UFW ALLOW] " {limit}',
        "### END LOGGING ###", "",
        "### RATE LIMITING ###",
        f'-A {chain}-user-limit -m limit --limit 3/minute -j LOG --log-prefix "[UFW LIMIT BLOCK] "',
        f"-A {chain}-user-limit -j REJECT",
        f"-A {chain}-user-limit-accept -j ACCEPT",
        "### END RATE LIMITING ###",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"
