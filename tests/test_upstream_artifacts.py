"""Dart and Starship, the optional upstream artifacts, through the bake's real path in seconds.

Their sites are unreachable from our build hosts, so images/agent.yaml leaves them off; this proves the path works
for the day they are on. Small archives of the official layouts are served over HTTPS on loopback, named in a spec's
`artifacts.dart` / `artifacts.starship`, downloaded and checked by `bake.fetch` and staged by `fetch.stage()`; then
the shipped hooks (languages' 41-dart, devtools' 51-starship) run as root in a private mount namespace with tmpfs
over /opt and /usr/local/bin, where the installed commands must print the staged versions. The host is never touched.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import shutil
import ssl
import subprocess
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from bake import fetch
from bake.errors import BakeError
from bake.spec import load_spec
from tests.bake_fixtures import copy_images, edit

REPO = Path(__file__).resolve().parents[1]
DART_HOOK = REPO / "images" / "elements" / "languages" / "post-install.d" / "41-dart"
STARSHIP_HOOK = REPO / "images" / "elements" / "devtools" / "post-install.d" / "51-starship"
STARSHIP_TGZ = "starship-x86_64-unknown-linux-musl.tar.gz"   # the official release's names
DART_ZIP = "dartsdk-linux-x64-release.zip"
STARSHIP_SAYS = "starship 1.99.0"
DART_SAYS = 'Dart SDK version: 3.99.0 (stable) on "linux_x64"'

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare (a private mount namespace)")


def script(says: str) -> bytes:
    return f"#!/bin/sh\necho '{says}'\n".encode()


def starship_archive(with_binary: bool = True) -> bytes:
    """The release's layout: the `starship` binary alone at the top of a tar.gz."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        name, data = ("starship", script(STARSHIP_SAYS)) if with_binary else ("README.md", b"no binary here\n")
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid = len(data), 0o755, 1000, 1000
        tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def dart_archive(top: str = "dart-sdk") -> bytes:
    """The SDK's layout: a zip whose top directory is dart-sdk/, with bin/dart executable."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data, mode in ((f"{top}/bin/dart", script(DART_SAYS), 0o755), (f"{top}/version", b"3.99.0\n", 0o644)):
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 3, (0o100000 | mode) << 16   # unix mode, as `zip` writes it
            zf.writestr(info, data)
    return out.getvalue()


@pytest.fixture
def server(tmp_path: Path, monkeypatch):
    """An HTTPS server on loopback serving tmp_path/www, its self-signed certificate trusted for this test only
    (the spec takes https:// URLs only). Returns (www dir, base URL)."""
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"), "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls / "cert.pem"))
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "cert.pem", tls / "key.pem")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"https://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def upstream_spec(tmp_path: Path, base_url: str, www: Path, archives: dict[str, tuple[str, bytes]],
                  sha256: dict[str, str] | None = None) -> Path:
    """The small test image's spec with `artifacts.<name>` pinned to each archive served from www."""
    spec = copy_images(tmp_path / "spec").parent / "agent-small.yaml"
    lines = []
    for name, (filename, data) in archives.items():
        (www / filename).write_bytes(data)
        digest = (sha256 or {}).get(name) or hashlib.sha256(data).hexdigest()
        lines.append(f"  {name}: {{version: 1.99.0, url: '{base_url}/{filename}', sha256: {digest}}}\n")
    edit(spec, "artifacts: {}\n", "artifacts:\n" + "".join(lines))
    return spec


def stage(spec_path: Path, tmp_path: Path) -> Path:
    """The bake's fetch phase for this spec: downloads checked into a cache, then the staging dir laid out."""
    staging = tmp_path / "staging"
    fetch.stage(load_spec(spec_path), "test", staging, tmp_path / "downloads", tmp_path / "npm", tmp_path / "plugins")
    return staging


def run_hook_in_scratch_root(hook: Path, staging: Path, tmp_path: Path, *after: str) -> subprocess.CompletedProcess:
    """The hook as DIB runs it (root, the staging dir at AGENTFLEET_STAGING_IN_TARGET), in a private mount namespace
    where /opt and /usr/local/bin are empty tmpfs; then `after` in that same namespace, following a `==` line."""
    scratch = tmp_path / "scratch-tmp"
    scratch.mkdir(exist_ok=True)
    body = ('mount -t tmpfs -o mode=0755 agentfleet-test /opt && mount -t tmpfs -o mode=0755 agentfleet-test '
            '/usr/local/bin || exit 99\nhook=$1; shift\n"$hook" || exit\necho ==\nexec "$@"\n')
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", body, "scratch-root",
                           str(hook), *(after or ("true",))],
                          env={"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": str(scratch),
                               "AGENTFLEET_STAGING_IN_TARGET": str(staging)},
                          capture_output=True, text=True, timeout=60)


@needs_root
def test_a_staged_starship_and_dart_install_and_report_their_versions(tmp_path: Path, server):
    www, url = server
    spec = upstream_spec(tmp_path, url, www, {"dart": (DART_ZIP, dart_archive()),
                                              "starship": (STARSHIP_TGZ, starship_archive())})
    staging = stage(spec, tmp_path)
    upstream = staging / "upstream"
    assert sorted(p.relative_to(upstream).as_posix() for p in upstream.rglob("*") if p.is_file()) == [
        f"dart/{DART_ZIP}", f"starship/{STARSHIP_TGZ}"]
    assert (staging / "upstream" / "starship" / STARSHIP_TGZ).read_bytes() == (www / STARSHIP_TGZ).read_bytes()

    starship = run_hook_in_scratch_root(STARSHIP_HOOK, staging, tmp_path, "/usr/local/bin/starship", "--version")
    assert starship.returncode == 0, starship.stderr
    assert starship.stdout == f"devtools: {STARSHIP_SAYS}\n==\n{STARSHIP_SAYS}\n"

    dart = run_hook_in_scratch_root(DART_HOOK, staging, tmp_path, "sh", "-c",
                                    "/usr/local/bin/dart --version && stat -c '%U %a' /opt/dart-sdk/bin/dart "
                                    "&& readlink /usr/local/bin/dart")
    assert dart.returncode == 0, dart.stderr
    assert dart.stdout == f"languages: Dart {DART_SAYS}\n==\n{DART_SAYS}\nroot 755\n/opt/dart-sdk/bin/dart\n"
    assert not (tmp_path / "scratch-tmp").exists() or not list((tmp_path / "scratch-tmp").iterdir())


@needs_root
def test_without_a_staged_artifact_the_hooks_install_nothing_and_say_so(tmp_path: Path):
    """Today's specs: dart and starship disabled, so nothing is staged under upstream/."""
    staging = stage(copy_images(tmp_path / "spec").parent / "agent-small.yaml", tmp_path)
    assert not (staging / "upstream").exists()
    for hook, says in ((STARSHIP_HOOK, "devtools: no upstream Starship artifact staged: the bash prompt falls back "
                                       "to a plain git-aware PS1"),
                       (DART_HOOK, "languages: no upstream Dart artifact staged: Dart is not installed")):
        result = run_hook_in_scratch_root(hook, staging, tmp_path, "ls", "-A", "/opt", "/usr/local/bin")
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{says}\n==\n/opt:\n\n/usr/local/bin:\n"


@needs_root
@pytest.mark.parametrize("hook, name, filename, archive, says", [
    (STARSHIP_HOOK, "starship", STARSHIP_TGZ, starship_archive(with_binary=False),
     f"devtools: {STARSHIP_TGZ} has no starship binary"),
    (DART_HOOK, "dart", DART_ZIP, dart_archive(top="sdk"), f"languages: {DART_ZIP} has no dart-sdk/bin/dart"),
], ids=["starship", "dart"])
def test_an_archive_without_the_binary_fails_the_hook_with_one_line(tmp_path: Path, server, hook, name, filename,
                                                                     archive, says):
    www, url = server
    staging = stage(upstream_spec(tmp_path, url, www, {name: (filename, archive)}), tmp_path)
    result = run_hook_in_scratch_root(hook, staging, tmp_path, "echo", "installed anyway")
    assert result.returncode == 1
    assert result.stderr == f"{says}\n"
    assert "==" not in result.stdout


def test_a_wrong_sha256_is_refused_before_anything_is_staged(tmp_path: Path, server):
    www, url = server
    spec = upstream_spec(tmp_path, url, www, {"dart": (DART_ZIP, dart_archive()),
                                              "starship": (STARSHIP_TGZ, starship_archive())},
                         sha256={"starship": hashlib.sha256(b"another build").hexdigest()})
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "from-the-last-bake").write_text("kept")
    with pytest.raises(BakeError, match=rf"artifacts.starship.sha256: checksum mismatch for {url}/{STARSHIP_TGZ}: "
                                        rf"expected {hashlib.sha256(b'another build').hexdigest()}, got "):
        stage(spec, tmp_path)
    assert [p.name for p in staging.iterdir()] == ["from-the-last-bake"]
    cached = sorted(p.name for p in (tmp_path / "downloads").iterdir())
    assert cached == [f"{hashlib.sha256(dart_archive()).hexdigest()}-{DART_ZIP}"], "only the verified file is kept"
