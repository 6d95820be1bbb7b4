"""Plugin discovery and checks through real ``autotl`` entry points.

Each test "installs" a fake distribution into tmp_path (a module plus a ``*.dist-info``
directory with METADATA and entry_points.txt) and puts tmp_path on sys.path, which is all
``importlib.metadata.entry_points`` needs; nothing is pip-installed.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid

import pytest

from autotl.cli import main
from autotl.errors import PluginError
from autotl.plugins import Registry
from autotl.testing import check_strategy

from conftest import BUILTINS  # noqa: E402
INSTALLED = sorted(Registry().strategies())  # built-ins plus installed first-party plugins

HEAD_ONLY = '''
import autotl


class HeadOnly:
    name = "head_only"
    description = "only the new head trains"
    defaults = {"head_only.lr": 0.01, "head_only.epochs": 2}

    def search_space(self, trial):
        return {
            "head_only.lr": trial.suggest_float("head_only.lr", 1e-3, 1e-1, log=True),
            "head_only.epochs": trial.suggest_int("head_only.epochs", 1, 3),
        }

    def prepare(self, model, params):
        group = autotl.ParamGroup(tuple(model.head_parameters()), float(params["head_only.lr"]))
        stage = autotl.Stage((group,), int(params["head_only.epochs"]))
        return autotl.Plan((stage,), batch_size=8, summary="head only")


@autotl.hookimpl
def autotl_strategies():
    return [HeadOnly()]
'''


def strategy_module(name: str, *, body: str = "", defaults: str | None = None,
                    prepare: bool = True, hook: str = "autotl_strategies", hook_args: str = "") -> str:
    """Source of a plugin module returning one minimal strategy, with the given defects."""
    defaults = defaults if defaults is not None else f'{{"{name}.lr": 0.01}}'
    prep = ("    def prepare(self, model, params):\n        raise AssertionError('not called')\n"
            if prepare else "")
    return (
        "import autotl\n\n\n"
        "class S:\n"
        f"    name = {name!r}\n"
        "    description = 'test strategy'\n"
        f"    defaults = {defaults}\n\n"
        "    def search_space(self, trial):\n"
        f"        return {{'{name}.lr': trial.suggest_float('{name}.lr', 1e-3, 1e-1)}}\n\n"
        f"{prep}\n\n"
        "@autotl.hookimpl\n"
        f"def {hook}({hook_args}):\n"
        f"{body or '    return [S()]'}\n"
    )


@pytest.fixture
def install(tmp_path, monkeypatch):
    """install(sources, entry_points=None, dist="myplug") -> {module key: unique module name}.

    `sources` maps a key to module source; each module gets a unique importable name (so
    sys.modules caching cannot leak between tests). `entry_points` maps an entry-point name
    to a key (default: "myplug" -> the only key).
    """
    created: list[str] = []

    def _install(sources: dict[str, str], entry_points: dict[str, str] | None = None,
                 dist: str = "myplug", version: str = "0.1") -> dict[str, str]:
        root = tmp_path / f"site-{dist}"
        root.mkdir()
        names = {}
        for key, source in sources.items():
            names[key] = f"{key}_{uuid.uuid4().hex[:10]}"
            (root / f"{names[key]}.py").write_text(textwrap.dedent(source))
            created.append(names[key])
        if entry_points is None:
            (only,) = sources
            entry_points = {dist: only}
        info = root / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(
            "[autotl]\n" + "".join(f"{ep} = {names[key]}\n" for ep, key in entry_points.items()))
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        return names

    yield _install
    for name in created:
        sys.modules.pop(name, None)


# -- a valid third-party plugin -----------------------------------------------------------------

def test_third_party_strategy_is_discovered_beside_builtins(install):
    names = install({"myplug": HEAD_ONLY})
    strategies = Registry().strategies()
    assert sorted(strategies) == sorted([*INSTALLED, "head_only"])
    mine = strategies["head_only"]
    assert (mine.plugin, mine.distribution) == ("myplug", "myplug 0.1")
    assert type(mine.strategy).__module__ == names["myplug"]
    for name, plugin in BUILTINS.items():
        assert (strategies[name].plugin, strategies[name].distribution) == (plugin, "autotl 0.1.0")
    assert list(Registry().select(["head_only", "linear_probe"])) == ["head_only", "linear_probe"]


def test_third_party_strategy_passes_the_conformance_suite(install):
    install({"myplug": HEAD_ONLY})
    check_strategy(Registry().strategies()["head_only"].strategy)


def test_third_party_strategy_is_listed_by_the_cli(install, capsys):
    install({"myplug": HEAD_ONLY})
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert "head_only  [plugin myplug (myplug 0.1)]\n    only the new head trains\n" in out
    assert "    head_only.lr                 float [0.001, 0.1] log   default 0.01\n" in out
    assert "    head_only.epochs             int [1, 3]   default 2\n" in out
    assert "full_finetune  [plugin autotl.finetune (autotl 0.1.0)]" in out


# -- a plugin that cannot be imported -------------------------------------------------------------

BROKEN_IMPORT = 'raise ImportError("needs libfoo, which is not installed")\n'


def test_import_error_names_the_plugin(install):
    install({"myplug": BROKEN_IMPORT})
    with pytest.raises(PluginError) as info:
        Registry()
    msg = str(info.value)
    assert msg.startswith('error importing plugin "myplug" (myplug 0.1): ImportError: '
                          "needs libfoo, which is not installed;")
    assert msg.endswith("--disable-plugin myplug")
    assert isinstance(info.value.__cause__, ImportError)


def test_import_error_through_the_cli(install, capsys):
    install({"myplug": BROKEN_IMPORT})
    assert main(["strategies"]) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and 'error importing plugin "myplug"' in errors[0], err
    assert "--disable-plugin myplug" in errors[0]
    assert "Traceback" not in err
    assert out == ""


def test_disabling_the_broken_plugin_loads_the_rest(install):
    install({"myplug": BROKEN_IMPORT})
    registry = Registry(disabled=("myplug",))
    assert sorted(registry.strategies()) == INSTALLED


def test_disable_plugin_in_the_cli(capsys):
    code = main(["--disable-plugin", "autotl.probe", "strategies"])
    out, err = capsys.readouterr()
    assert code == 0, err
    headers = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    probe_family = [n for n, plugin in BUILTINS.items() if plugin == "autotl.probe"]
    assert probe_family == ["linear_probe", "lp_ft"]
    assert headers == [n for n in INSTALLED if n not in probe_family]


def test_disabling_an_unknown_plugin_suggests_installed_ones():
    with pytest.raises(PluginError) as info:
        Registry(disabled=("autotl.prob",))
    msg = str(info.value)
    assert msg.startswith("unknown plugin 'autotl.prob' (did you mean 'autotl.probe'?); choose from: ")
    assert "autotl.finetune" in msg and "autotl.regularize" in msg


# -- conflicts and contract violations --------------------------------------------------------------

def test_two_plugins_claiming_one_name(install):
    install({"plug_a": strategy_module("dup")}, dist="plug_a")
    install({"plug_b": strategy_module("dup")}, dist="plug_b")
    with pytest.raises(PluginError) as info:
        Registry().strategies()
    msg = str(info.value)
    assert msg.startswith("strategy name 'dup' is claimed by two plugins: ")
    assert '"plug_a"' in msg and '"plug_b"' in msg and "--disable-plugin" in msg


def test_third_party_claiming_a_builtin_name(install):
    install({"myplug": strategy_module("full_finetune", defaults='{"full_finetune.lr": 0.01}')})
    with pytest.raises(PluginError) as info:
        Registry().strategies()
    msg = str(info.value)
    assert "'full_finetune' is claimed by two plugins" in msg
    assert '"autotl.finetune"' in msg and '"myplug"' in msg


def test_duplicate_within_one_plugin(install):
    install({"myplug": strategy_module("twice", body="    return [S(), S()]")})
    with pytest.raises(PluginError, match=r"'twice' is claimed by two plugins: \"myplug\" and \"myplug\""):
        Registry().strategies()


@pytest.mark.parametrize("hook, hook_args, words", [
    ("autotl_strategys", "", ["unknown hook", "autotl_strategys"]),
    ("autotl_strategies", "config", ["config"]),
], ids=["misspelled-hook", "unknown-hook-argument"])
def test_hook_contract_is_checked_at_startup(install, hook, hook_args, words):
    install({"myplug": strategy_module("fine", hook=hook, hook_args=hook_args)})
    with pytest.raises(PluginError) as info:
        Registry()  # at startup, before any strategy is asked for
    msg = str(info.value)
    assert msg.startswith('plugin "myplug" breaks the autotl hook contract: ')
    for word in words:
        assert word in msg, msg


@pytest.mark.parametrize("source, expected", [
    (strategy_module("bad name", defaults='{"bad name.lr": 0.01}'),
     "plugin \"myplug\" returned a strategy whose name is 'bad name'; a strategy needs an "
     "identifier-like `name` string"),
    (strategy_module("noprep", prepare=False),
     'strategy "noprep" from plugin "myplug" has no prepare() method'),
    (strategy_module("leaky", defaults='{"lr": 0.01}'),
     "strategy \"leaky\" from plugin \"myplug\": defaults key 'lr' must be namespaced as 'leaky.<param>'"),
    (strategy_module("nodefaults", defaults="None"),
     'strategy "nodefaults" from plugin "myplug" needs a `defaults` dict'),
    (strategy_module("boom", body="    raise RuntimeError('kaput')"),
     'plugin "myplug" failed in autotl_strategies: kaput'),
], ids=["bad-name", "no-prepare", "defaults-not-namespaced", "no-defaults", "hook-raises"])
def test_broken_strategy_is_a_plugin_error(install, source, expected):
    install({"myplug": source})
    registry = Registry()  # the module itself imports and registers fine
    with pytest.raises(PluginError) as info:
        registry.strategies()
    assert str(info.value) == expected


def test_broken_strategy_through_the_cli(install, capsys):
    install({"myplug": strategy_module("leaky", defaults='{"lr": 0.01}')})
    assert main(["strategies"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == ["error: strategy \"leaky\" from plugin \"myplug\": defaults key 'lr' must be "
                      "namespaced as 'leaky.<param>'"], err
    assert "Traceback" not in err


# -- select ---------------------------------------------------------------------------------------

def test_select_unknown_strategy_lists_the_installed_ones():
    registry = Registry()
    with pytest.raises(PluginError) as info:
        registry.select(["nosuch"])
    assert str(info.value) == "unknown strategy 'nosuch'; choose from: " + ", ".join(INSTALLED)
    with pytest.raises(PluginError, match=r"unknown strategy 'linear_prob' \(did you mean 'linear_probe'\?\)"):
        registry.select(["full_finetune", "linear_prob"])


def test_select_all_named_and_deduplicated():
    registry = Registry()
    assert list(registry.select(None)) == INSTALLED
    with pytest.raises(PluginError, match="no strategy named"):
        registry.select([])
    picked = registry.select(["l2sp", "freeze", "l2sp"])
    assert list(picked) == ["l2sp", "freeze"]
    assert picked["freeze"].plugin == "autotl.finetune"


def test_select_with_nothing_installed():
    registry = Registry(load_entry_points=False)
    with pytest.raises(PluginError, match="no strategies are installed"):
        registry.select(None)


def test_direct_registration_has_no_distribution(install):
    names = install({"myplug": HEAD_ONLY})
    module = importlib.import_module(names["myplug"])
    registry = Registry(load_entry_points=False)
    registry.register(module, "local")
    (only,) = registry.strategies().values()
    assert (only.strategy.name, only.plugin, only.distribution) == ("head_only", "local", "")
    with pytest.raises(PluginError, match='plugin "local" breaks the autotl hook contract'):
        registry.register(object(), "local")  # the name is taken
