"""The app layer's content (bake/tree_diff.py) on small synthetic trees: what the app stage added, changed or removed
in the base tree, and a tar of it that, extracted over the base tree after the removals, gives the app tree."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from bake import tree_diff
from bake.errors import BakeError

CAP_NET_RAW = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


def make_tar(path: Path, members: list[dict]) -> Path:
    """A tar like DIB's: `./`-prefixed names, numeric owners with names, pax xattrs. Each member: name, and one of
    data (a file), dir, symlink, hardlink, with optional mode, uid, gid, mtime, xattrs."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo("./" + m["name"])
            info.mode, info.uid, info.gid = m.get("mode", 0o644), m.get("uid", 0), m.get("gid", 0)
            info.uname = info.gname = "root"
            info.mtime = m.get("mtime", 1_700_000_000)
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in m.get("xattrs", {}).items()}
            data = None
            if "data" in m:
                data = m["data"]
                info.size = len(data)
            elif "dir" in m:
                info.type, info.mode = tarfile.DIRTYPE, m.get("mode", 0o755)
            elif "symlink" in m:
                info.type, info.linkname = tarfile.SYMTYPE, m["symlink"]
            elif "hardlink" in m:
                info.type, info.linkname = tarfile.LNKTYPE, "./" + m["hardlink"]
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


BASE = [
    {"name": "", "dir": True},
    {"name": "etc", "dir": True},
    {"name": "etc/passwd", "data": b"root:x:0:0::/root:/bin/bash\n"},
    {"name": "etc/motd", "data": b"hello\n"},
    {"name": "etc/gone", "data": b"removed by the app stage\n"},
    {"name": "etc/alternatives", "dir": True},
    {"name": "etc/alternatives/editor", "symlink": "/usr/bin/vi"},
    {"name": "usr", "dir": True},
    {"name": "usr/bin", "dir": True},
    {"name": "usr/bin/ping", "data": b"\x7fELF ping", "mode": 0o755, "xattrs": {"security.capability": CAP_NET_RAW}},
    {"name": "usr/bin/perl", "data": b"\x7fELF perl", "mode": 0o755},
    {"name": "usr/bin/perl5.34", "hardlink": "usr/bin/perl"},
    {"name": "var", "dir": True},
    {"name": "var/cache", "dir": True},
    {"name": "var/cache/thing", "dir": True},
    {"name": "var/cache/thing/a", "data": b"a"},
    {"name": "var/cache/thing/b", "data": b"b"},
]


def diff_of(tmp_path: Path, base: list[dict], app: list[dict]) -> tree_diff.TreeDiff:
    old = tree_diff.index(make_tar(tmp_path / "base.tar", base))
    new = tree_diff.index(make_tar(tmp_path / "app.tar", app))
    return tree_diff.diff(old, new, list(new))


def edited(**changes) -> list[dict]:
    """BASE with members replaced ({name: member or None to drop}) and new ones appended."""
    out = [changes.pop(m["name"], m) for m in BASE]
    return [m for m in out if m is not None] + [dict(v, name=k) for k, v in changes.items() if v is not None]


def test_identical_trees_have_no_difference(tmp_path):
    assert diff_of(tmp_path, BASE, BASE) == tree_diff.TreeDiff((), ())


def test_an_added_file_is_written_and_nothing_is_removed(tmp_path):
    d = diff_of(tmp_path, BASE, edited(**{"etc/agentd.yaml": {"data": b"interval: 60\n"}}))
    assert d.changed == ("etc/agentd.yaml",) and d.removed == ()


def test_a_file_whose_content_changed_is_written_even_with_the_same_size_and_time(tmp_path):
    d = diff_of(tmp_path, BASE, edited(**{"etc/motd": {"name": "etc/motd", "data": b"HELLO\n"}}))
    assert d.changed == ("etc/motd",) and d.removed == ()


def test_a_removed_file_is_removed(tmp_path):
    d = diff_of(tmp_path, BASE, edited(**{"etc/gone": None}))
    assert d.changed == () and d.removed == ("etc/gone",)


def test_a_removed_directory_is_removed_once_with_everything_under_it(tmp_path):
    d = diff_of(tmp_path, BASE, edited(**{"var/cache/thing": None, "var/cache/thing/a": None,
                                          "var/cache/thing/b": None}))
    assert d.removed == ("var/cache/thing",)


def test_a_mode_or_owner_change_alone_rewrites_the_path_a_time_change_alone_does_not(tmp_path):
    for change in ({"mode": 0o600}, {"uid": 1000}, {"gid": 4}):
        d = diff_of(tmp_path, BASE, edited(**{"etc/motd": {"name": "etc/motd", "data": b"hello\n", **change}}))
        assert d.changed == ("etc/motd",), change
    later = {"name": "etc/motd", "data": b"hello\n", "mtime": 1_800_000_000}
    d = diff_of(tmp_path, BASE, edited(**{"etc/motd": later}))
    assert d.changed == (), "a rebuild's new times alone (npm's install) rewrite nothing"


def test_a_rewritten_python_cache_brings_its_source_so_their_times_agree():
    """A .pyc records its source's mtime; were the source left at the old time, Python would find every cache stale."""
    def entry(content, mtime):
        return tree_diff.Entry("file", 0o644, 0, 0, mtime, content)
    names = ["opt/agentd/agentd/daemon.py", "opt/agentd/agentd/__pycache__/daemon.cpython-310.pyc",
             "opt/agentd/agentd/other.py"]
    old = {names[0]: entry("src", 1), names[1]: entry("pyc-1", 1), names[2]: entry("other", 1)}
    new = {names[0]: entry("src", 2), names[1]: entry("pyc-2", 2), names[2]: entry("other", 2)}
    assert tree_diff.diff(old, new, names).changed == (names[0], names[1]), "in the tree's order; other.py left"


def test_an_xattr_change_rewrites_the_file_and_the_new_xattrs_are_known(tmp_path):
    app = edited(**{"usr/bin/ping": {"name": "usr/bin/ping", "data": b"\x7fELF ping", "mode": 0o755}})
    d = diff_of(tmp_path, BASE, app)
    assert d.changed == ("usr/bin/ping",)
    assert tree_diff.index(tmp_path / "base.tar")["usr/bin/ping"].xattrs == (("security.capability", CAP_NET_RAW),)
    assert tree_diff.xattr_bytes(CAP_NET_RAW)[:4] == b"\x01\x00\x00\x02"


def test_a_symlink_pointed_elsewhere_is_rewritten(tmp_path):
    d = diff_of(tmp_path, BASE, edited(**{"etc/alternatives/editor": {"name": "etc/alternatives/editor",
                                                                       "symlink": "/usr/bin/nvim"}}))
    assert d.changed == ("etc/alternatives/editor",) and d.removed == ()


def test_a_hard_linked_file_changes_with_every_name_of_its_inode(tmp_path):
    app = edited(**{"usr/bin/perl": {"name": "usr/bin/perl", "data": b"\x7fELF perl 2", "mode": 0o755}})
    d = diff_of(tmp_path, BASE, app)
    assert d.changed == ("usr/bin/perl", "usr/bin/perl5.34")


def test_a_new_name_for_an_inode_rewrites_the_whole_group(tmp_path):
    d = diff_of(tmp_path, BASE, edited(**{"usr/bin/perl5": {"hardlink": "usr/bin/perl"}}))
    assert d.changed == ("usr/bin/perl", "usr/bin/perl5.34", "usr/bin/perl5")
    entries = tree_diff.index(tmp_path / "app.tar")
    assert entries["usr/bin/perl5"].links == ("usr/bin/perl", "usr/bin/perl5", "usr/bin/perl5.34")


def test_a_directory_that_became_a_file_is_removed_first_then_written(tmp_path):
    app = edited(**{"var/cache/thing": {"name": "var/cache/thing", "data": b"now a file"},
                    "var/cache/thing/a": None, "var/cache/thing/b": None})
    d = diff_of(tmp_path, BASE, app)
    assert d.changed == ("var/cache/thing",) and d.removed == ("var/cache/thing",)


def test_a_file_that_became_a_directory_is_removed_first_then_written_with_its_content(tmp_path):
    app = edited(**{"etc/motd": {"name": "etc/motd", "dir": True},
                    "etc/motd/10-header": {"data": b"#!/bin/sh\n", "mode": 0o755}})
    d = diff_of(tmp_path, BASE, app)
    assert d.changed == ("etc/motd", "etc/motd/10-header") and d.removed == ("etc/motd",)


def test_top_most_keeps_a_sibling_whose_name_extends_another():
    assert tree_diff.top_most(["a/b", "a", "a-b", "a-b/c", "ab"]) == ("a", "a-b", "ab")


def test_a_hard_link_to_a_member_not_yet_seen_is_refused(tmp_path):
    bad = make_tar(tmp_path / "bad.tar", [{"name": "x", "hardlink": "y"}, {"name": "y", "data": b"y"}])
    with pytest.raises(BakeError, match="hard link x to y"):
        tree_diff.index(bad)


def test_the_changes_applied_over_the_base_tree_give_the_app_tree(tmp_path):
    """What the app layer does in the appliance (removals, then tar -x of the changes), done on the host with GNU
    tar as root: the result has the app tree's every path, content, mode, owner, time, link and inode sharing."""
    app = edited(**{"etc/motd": {"name": "etc/motd", "data": b"changed\n", "mode": 0o600, "uid": 1000},
                    "etc/gone": None, "usr/bin/perl5": {"hardlink": "usr/bin/perl"},
                    "var/cache/thing": {"name": "var/cache/thing", "symlink": "../lib/thing"},
                    "var/cache/thing/a": None, "var/cache/thing/b": None,
                    "etc/agentd.yaml": {"data": b"interval: 60\n", "mtime": 1_750_000_000}})
    base_tar, app_tar = make_tar(tmp_path / "base.tar", BASE), make_tar(tmp_path / "app.tar", app)
    new = tree_diff.index(app_tar)
    d = tree_diff.diff(tree_diff.index(base_tar), new, list(new))
    assert tree_diff.write_changes(app_tar, d.changed, tmp_path / "changes.tar") == len(d.changed)
    with tarfile.open(tmp_path / "changes.tar") as changes:
        assert all(m.uname == "" and m.gname == "" and not m.pax_headers.get("SCHILY.xattr.security.capability")
                   for m in changes), "owners by number only, xattrs set by the caller"
    layered, flat = tmp_path / "layered", tmp_path / "flat"
    for root, tars in ((layered, [base_tar]), (flat, [app_tar])):
        root.mkdir()
        for tar in tars:
            subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(tar)], check=True)
    for name in d.removed:
        subprocess.run(["rm", "-rf", str(layered / name)], check=True)
    subprocess.run(["tar", "-C", str(layered), "-xpf", str(tmp_path / "changes.tar")], check=True)
    assert tree_state(layered) == tree_state(flat)


def tree_state(root: Path) -> dict:
    """Every path's type, mode, owner, mtime (not of dirs: extraction order sets those), content and inode sharing."""
    state, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            content = os.readlink(path) if kind == "link" else path.read_bytes() if kind == "file" else None
            group = inodes.setdefault(st.st_ino, rel) if kind == "file" else None
            state[rel] = (kind, st.st_mode, st.st_uid, st.st_gid, None if kind == "dir" else st.st_mtime, content,
                          group)
    return state


def test_the_cached_index_is_the_index_until_the_tar_changes(tmp_path):
    tar = make_tar(tmp_path / "base.tar", BASE)
    cache = tmp_path / "base.index.json"
    fresh = tree_diff.index(tar)
    assert tree_diff.cached_index(tar, cache) == fresh and cache.exists()
    assert tree_diff.cached_index(tar, cache) == fresh, "read back from the cache"
    make_tar(tar, edited(**{"etc/motd": {"name": "etc/motd", "data": b"a longer motd\n"}}))
    assert tree_diff.cached_index(tar, cache)["etc/motd"] != fresh["etc/motd"], "a rewritten tar is indexed again"
    cache.write_text("{not json")
    assert tree_diff.cached_index(tar, cache) == tree_diff.index(tar), "a damaged cache is rebuilt"
