"""Reads package metadata from the npm registry (the one place Node, npm and OpenClaw come from)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from bake.errors import BakeError

REGISTRY = "https://registry.npmjs.org"


def package_version(name: str, version: str, timeout: float = 30) -> dict:
    url = f"{REGISTRY}/{name}/{version}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise BakeError(f"{name}@{version}: registry answered {e.code} for {url}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise BakeError(f"{name}@{version}: registry unreachable ({getattr(e, 'reason', e)})") from None
