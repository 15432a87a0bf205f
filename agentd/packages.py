"""Installed dpkg packages (from /var/lib/dpkg/status, no subprocess) and their drift against the image manifest."""
from __future__ import annotations

from typing import Dict, List

from .protocol import DriftEntry


def parse_dpkg_status(text: str) -> Dict[str, str]:
    """name -> version of every package whose Status is "install ok installed"."""
    installed: Dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields: Dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue  # continuation lines (Description, Conffiles) are not needed
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields.get("Status") == "install ok installed" and "Package" in fields:
            installed[fields["Package"]] = fields.get("Version", "")
    return installed


def package_drift(expected: Dict[str, str], installed: Dict[str, str]) -> List[DriftEntry]:
    """Changed, removed and added packages; nothing when the manifest lists no packages (no baseline to judge)."""
    if not expected:
        return []
    drift = []
    for name in sorted(set(expected) | set(installed)):
        want, have = expected.get(name), installed.get(name)
        if want != have:
            drift.append(DriftEntry(path=f"pkg:{name}", kind="package", expected=want, actual=have))
    return drift
