"""The plugin boundary: shipped plugins import only ctfhost.plugin_api, and their runtime options are documented."""

import ast
import re
from pathlib import Path

import pytest

from ctfhost import plugin_api, testing
from ctfhost.hooktypes import CoreOptions
from ctfhost.testing import FakeOptions
from ctfhost_plugin_docker.options import DockerOptions
from ctfhost_plugin_kctf.options import KubeOptions

ROOT = Path(__file__).resolve().parent.parent
API = "ctfhost.plugin_api"
TEST_HELPERS = {API, "ctfhost.testing"}


def ctfhost_imports(path):
    """(module, line) of every import of a ctfhost module in `path`, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from ctfhost import plugin_api` is ctfhost.plugin_api; `from ctfhost import hookimpl` reaches past it
            if node.module == "ctfhost":
                names = [f"ctfhost.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        found.extend((name, node.lineno) for name in names if name == "ctfhost" or name.startswith("ctfhost."))
    return found


def plugin_code():
    """Every module of the shipped plugins' packages except their test fixtures (testing.py)."""
    return [path for path in sorted(ROOT.glob("plugins/*/ctfhost_plugin_*/**/*.py")) if path.name != "testing.py"]


def plugin_test_side():
    """The plugins' test fixtures and tests."""
    return sorted(ROOT.glob("plugins/*/ctfhost_plugin_*/**/testing.py")) + sorted(ROOT.glob("plugins/*/tests/**/*.py"))


def violations(paths, allowed):
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in paths
        for module, line in ctfhost_imports(path)
        if module not in allowed
    ]


def test_the_import_check_reads_every_shipped_plugin():
    packages = {path.relative_to(ROOT).parts[2] for path in plugin_code()}
    assert {
        "ctfhost_plugin_docker", "ctfhost_plugin_kctf", "ctfhost_plugin_kata", "ctfhost_plugin_traefik", "ctfhost_plugin_ctfd",
    } <= packages
    assert ROOT / "plugins/kctf_runtime/ctfhost_plugin_kctf/testing.py" in plugin_test_side()
    assert ROOT / "plugins/kctf_runtime/ctfhost_plugin_kctf/hooks.py" in plugin_code()


@pytest.mark.parametrize(
    "source, found",
    [
        ("from ctfhost.plugin_api import hookimpl\n", []),
        ("from ctfhost import plugin_api\n", []),
        ("import ctfhost.plugin_api\n", []),
        ("from . import context\n", []),
        ("from ctfhost import hookimpl\n", ["ctfhost.hookimpl"]),
        ("import ctfhost\n", ["ctfhost"]),
        ("import ctfhost.models\n", ["ctfhost.models"]),
        ("def f():\n    from ctfhost.models import Instance\n", ["ctfhost.models"]),
        ("class K:\n    def f(self):\n        import ctfhost.worker.queue as q\n", ["ctfhost.worker.queue"]),
        ("from ctfhost.testing import need\n", ["ctfhost.testing"]),
    ],
)
def test_the_import_check_finds_core_imports_at_any_depth(tmp_path, source, found):
    package = tmp_path / "plugins" / "podman" / "ctfhost_plugin_podman"
    package.mkdir(parents=True)
    (package / "hooks.py").write_text(source)
    assert [module for module, _ in ctfhost_imports(package / "hooks.py") if module != API] == found


def test_shipped_plugins_import_nothing_from_ctfhost_but_the_plugin_api():
    assert violations(plugin_code(), {API}) == []


def test_the_test_surface_exists():
    for name in testing.TEST_SURFACE:
        assert hasattr(testing, name), name


def test_plugin_tests_use_only_the_plugin_api_and_the_test_helpers():
    assert violations(plugin_test_side(), TEST_HELPERS) == []


def test_plugin_api_exports_exist_and_are_all_listed():
    for name in plugin_api.__all__:
        assert hasattr(plugin_api, name), name
    public = {name for name in vars(plugin_api) if not name.startswith("_")}
    # everything the module offers is a promise; imports it only uses itself would be accidental API
    assert public - set(plugin_api.__all__) <= {"current_app"}


def option_rows(readme):
    """{key: meaning} of the README's `extra_config` options table; a row may name several keys."""
    text = readme.read_text()
    section = text.split("## `extra_config` options", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and "`" in cells[0]:
            for key in re.findall(r"`([a-z_]+)`", cells[0]):
                rows[key] = cells[1]
    return rows


@pytest.mark.parametrize(
    "readme, schema",
    [("plugins/docker_runtime/README.md", DockerOptions), ("plugins/kctf_runtime/README.md", KubeOptions)],
    ids=["docker", "kctf"],
)
def test_each_runtime_option_is_in_the_plugin_readme(readme, schema):
    documented = option_rows(ROOT / readme)
    declared = set(schema().fields) | set(CoreOptions().fields)
    assert set(documented) == declared, f"{readme} documents {sorted(documented)}; the schema declares {sorted(declared)}"


def test_every_option_field_has_a_description_and_an_error_wording():
    for schema in (DockerOptions, KubeOptions, FakeOptions, CoreOptions):
        for name, field in schema().fields.items():
            assert field.metadata.get("description"), f"{schema.__name__}.{name} has no description"
            assert field.metadata.get("must_be"), f"{schema.__name__}.{name} has no must_be"
