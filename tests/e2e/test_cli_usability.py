"""The CLI as people type it: help with defaults, the methods listed, options
before or after the command, bars only on a terminal, --version, files with
the usual permissions, and paths named in errors."""
from __future__ import annotations

import os
import pty
import re
import subprocess

import pytest

import bonsai
from test_cli import CLIENT, PYTHON, run_cli


def _all_parsers():
    from bonsai import cli
    parser = cli._parser()
    yield "main", parser
    for action in parser._subparsers._group_actions:
        yield from action.choices.items()


def test_every_option_has_help_with_its_default():
    from bonsai import cli
    for name, parser in _all_parsers():
        formatter = cli._Formatter(prog=parser.prog)
        for action in parser._actions:
            if not action.option_strings or action.dest in ("help", "version"):
                continue
            text = formatter._get_help_string(action) or ""
            assert "default" in text, \
                (name, action.option_strings, text)
    proc = run_cli("compress", "--help")
    assert proc.returncode == 0 and "(default: layer)" in " ".join(proc.stdout.split())


def test_help_lists_the_methods_the_server_offers(server):
    proc = run_cli("--help")
    with bonsai.Client(server.target) as c:
        offered = [m.name for m in c.capabilities().methods]
    listed = re.search(r"methods: ([a-z, ]+)", " ".join(proc.stdout.split())).group(1).strip().split(", ")
    assert listed == offered


def test_target_works_before_and_after_the_command(server):
    for args in (["--target", server.target, "capabilities"], ["capabilities", "--target", server.target]):
        proc = run_cli(*args, target="127.0.0.1:1")
        assert proc.returncode == 0, (args, proc.stderr)
        assert "magnitude" in proc.stdout


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"bonsai client {bonsai.__version__}"


def _compress_args(server, src, out, *extra):
    return ["compress", str(src), "-o", str(out), "--target", server.target, *extra]


def test_no_progress_bars_when_stderr_is_not_a_terminal(server, mlp_safetensors, tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(mlp_safetensors)
    proc = run_cli(*_compress_args(server, src, tmp_path / "a.safetensors"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    proc = run_cli(*_compress_args(server, src, tmp_path / "b.safetensors", "--progress"))
    assert proc.returncode == 0 and "upload" in proc.stderr and "%|" in proc.stderr


def test_progress_bars_on_a_terminal(server, mlp_safetensors, tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(mlp_safetensors)
    leader, follower = pty.openpty()
    env = dict(os.environ, PYTHONPATH=CLIENT)
    proc = subprocess.run([PYTHON, "-m", "bonsai", *_compress_args(server, src, tmp_path / "o.safetensors")],
                          stdout=subprocess.PIPE, stderr=follower, env=env, timeout=120)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert b"upload" in seen


def test_output_files_get_the_umask_permissions(server, mlp_safetensors, tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(mlp_safetensors)
    out = tmp_path / "o.safetensors"
    env = dict(os.environ, PYTHONPATH=CLIENT)
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        out.unlink(missing_ok=True)
        proc = subprocess.run(["sh", "-c", f"umask {umask:03o} && exec {PYTHON} -m bonsai \"$@\"", "sh",
                               *_compress_args(server, src, out)], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_mode & 0o777 == mode


def test_a_folder_where_a_file_is_expected_names_the_users_path(server, mlp_safetensors, tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(mlp_safetensors)
    folder = tmp_path / "existing"
    folder.mkdir()
    proc = run_cli(*_compress_args(server, src, folder))
    assert proc.returncode == 1
    assert f"{folder} is a folder" in proc.stderr and ".part" not in proc.stderr


def test_an_output_folder_that_cannot_be_made_names_the_users_path(server, mlp_safetensors, tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(mlp_safetensors)
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"x")
    out = blocker / "sub" / "o.safetensors"
    proc = run_cli(*_compress_args(server, src, out))
    assert proc.returncode == 1
    assert f"{blocker / 'sub'} cannot be made: {blocker} is a file (for {out})" in proc.stderr
    assert ".bonsai-" not in proc.stderr


def test_a_missing_output_folder_is_made(server, mlp_safetensors, tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(mlp_safetensors)
    out = tmp_path / "new" / "deeper" / "o.safetensors"
    proc = run_cli(*_compress_args(server, src, out))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_output_folder_names_the_users_path(server, mlp_safetensors, tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(mlp_safetensors)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    proc = run_cli(*_compress_args(server, src, locked / "o.safetensors"))
    assert proc.returncode == 1 and f"cannot write into {locked}" in proc.stderr


def test_method_with_a_recipe_is_refused_before_any_upload(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("s:\n  m_modifiers:\n    MagnitudePruningModifier: {sparsity: 0.5}\n")
    src = tmp_path / "m.safetensors"
    src.write_bytes(b"x")
    proc = run_cli("compress", str(src), "-o", str(tmp_path / "o"), "--recipe", str(recipe), "--method", "nm",
                   target="127.0.0.1:1")
    assert proc.returncode == 2 and "--method and --sparsity apply to every tensor" in proc.stderr
