"""benchmarks/compare.py builds the command lines the matrix runs (no run here)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.mark.parametrize("flags, cold", [([], False), (["--no-knowledge"], True)])
def test_no_knowledge_reaches_autotls_command_line(compare, tmp_path, flags, cold):
    args = compare.parse_args([str(tmp_path), "--rows", "300", "--seeds", "0", *flags])
    cell = compare.Cell("data", 300, 0, tmp_path, 300, False)
    cmd, _ = compare.command("autotl", cell, 1.0, 60.0, tmp_path, args)
    assert ("--no-knowledge" in cmd) is cold and cmd[cmd.index("--timeout") + 1] == "60.0"
