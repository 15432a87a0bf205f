"""One exit-code table for every CLI (host/exit_codes.py): 0 ok, 1 the operation failed, 2 bad usage or input,
3 a replace rolled back, 130 interrupted. agentd keeps its own copy (it may import only itself)."""
import ast
from pathlib import Path

import pytest

from agentd import exit_codes as agentd_codes
from bake import cli as bake_cli
from bake import publish
from deploy import clone
from host import exit_codes
from host.run import run

REPO = Path(__file__).resolve().parent.parent
CLIS = ("bake/cli.py", "deploy/clone.py", "agentd/cli.py", "collector/cli.py")


def _table(module) -> dict[str, int]:
    return {k: v for k, v in vars(module).items() if k.isupper() and isinstance(v, int)}


def test_agentds_copy_of_the_table_is_the_same_numbers():
    assert _table(agentd_codes) == _table(exit_codes)
    assert _table(exit_codes) == {"OK": 0, "FAILED": 1, "USAGE": 2, "ROLLED_BACK": 3, "INTERRUPTED": 130}


@pytest.mark.parametrize("path", CLIS)
def test_no_cli_returns_a_bare_number(path):
    """A literal return code is how the CLIs drifted apart (the bake said 1 where the others said 2)."""
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
            assert not isinstance(node.value.value, int) or isinstance(node.value.value, bool), \
                f"{path}:{node.lineno}: return exit_codes.<NAME>, not {node.value.value}"


def test_the_bake_exits_2_for_a_spec_that_is_not_there(tmp_path, capsys):
    assert bake_cli.main(["--build-dir", str(tmp_path), "bake", str(tmp_path / "nope.yaml")]) == exit_codes.USAGE
    assert "spec not found" in capsys.readouterr().err


def test_the_bake_exits_2_for_verify_of_an_unpublished_image_and_1_for_a_modified_one(tmp_path, capsys):
    assert bake_cli.main(["--build-dir", str(tmp_path), "verify", str(tmp_path / "x.qcow2")]) == exit_codes.USAGE
    candidate = tmp_path / "c.qcow2"
    candidate.write_bytes(b"image")
    image = publish.publish(tmp_path / "images", "agent", "v1", candidate, {}, None, None)
    image.qcow2.chmod(0o644)
    with open(image.qcow2, "ab") as f:
        f.write(b"tampered")
    assert bake_cli.main(["--build-dir", str(tmp_path), "verify", str(image.qcow2)]) == exit_codes.FAILED
    assert "differs from its manifest" in capsys.readouterr().err


def test_the_clone_exits_1_with_one_line_when_a_host_tool_fails(monkeypatch, capsys):
    """The fast tier has no libvirtd to fail qemu-img behind; the failure itself is a real command's."""
    def failing_clone(*args, **kwargs):
        run(["sh", "-c", "echo 'qemu-img: Could not open backing file' >&2; exit 1"], capture=True)

    monkeypatch.setattr(clone, "clone", failing_clone)
    assert clone.main(["athena"]) == exit_codes.FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "failed (exit code 1): qemu-img: Could not open backing file" in err
