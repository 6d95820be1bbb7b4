"""What a wheel carries: every data file autotl reads at run time must be declared as package data,
or an install from a wheel (not editable) silently runs without it."""

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_data_file_beside_the_code_is_declared_package_data():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["autotl"]
    package = ROOT / "autotl"
    data_files = [p.relative_to(package).as_posix() for p in package.rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert data_files, "autotl ships data files (the portfolio, the starter knowledge)"
    missing = [f for f in data_files if not any(fnmatch.fnmatch(f, pattern) for pattern in declared)]
    assert not missing, f"not in [tool.setuptools.package-data] autotl: {missing}"
