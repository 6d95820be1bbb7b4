"""The README's plugin example is real: installed through an entry point, it conforms."""

import re
from pathlib import Path

from autotl.plugins import Registry

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _block(first_line: str) -> str:
    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"README has no python block starting with {first_line!r}")


def test_readme_plugin_installs_through_its_entry_point_and_passes_its_own_test(fake_plugin):
    plugin = _block("# autotl_toplayer.py")
    assert 15 <= len(plugin.strip().splitlines()) <= 30  # "a complete working plugin of about 20 lines"
    fake_plugin("autotl_toplayer", plugin)
    found = Registry().strategies()["top_layer"]
    assert found.plugin == "autotl_toplayer" and found.distribution == "autotl_toplayer 0.1"
    namespace: dict = {}
    exec(compile(_block("# test_autotl_toplayer.py"), "test_autotl_toplayer.py", "exec"), namespace)
    namespace["test_top_layer_conforms"]()
