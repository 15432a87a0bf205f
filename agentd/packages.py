"""Installed dpkg packages (from /var/lib/dpkg/status, no subprocess) and their drift against the image manifest."""
from __future__ import annotations

from typing import Dict, List

from .protocol import DriftEntry


def parse_dpkg_stanzas(text: str) -> List[Dict[str, str]]:
    """Every stanza of dpkg's status file as field -> value; a multi-line field (Conffiles, Description) keeps its
    continuation lines, one per line, after its first line's value."""
    stanzas = []
    for stanza in text.split("\n\n"):
        fields: Dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t"):
                if key is not None:
                    fields[key] += "\n" + line.strip()
                continue
            if ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def installed_stanzas(text: str) -> List[Dict[str, str]]:
    """The stanzas of packages whose Status is "install ok installed"."""
    return [f for f in parse_dpkg_stanzas(text) if f.get("Status") == "install ok installed" and "Package" in f]


def parse_dpkg_status(text: str) -> Dict[str, str]:
    """name -> version of every package whose Status is "install ok installed"."""
    return {f["Package"]: f.get("Version", "") for f in installed_stanzas(text)}


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
