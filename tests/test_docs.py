"""Every hook and every name of the plugin API is documented in docs/plugins.md; every hook has a test and a complete docstring."""

import inspect
import re
from pathlib import Path

import pluggy
import pytest

import ctfhost.hookspecs
from ctfhost import plugin_api

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DOCS = ROOT / "docs" / "plugins.md"
FIRSTRESULT = "Stops at the first non-None result."
HEADING = re.compile(r"^### (\w+)\((.*)\)\s*$", re.MULTILINE)


def hookspecs():
    """{name: (function, firstresult)} for every hook pluggy finds in ctfhost.hookspecs."""
    pm = pluggy.PluginManager("ctfhost")
    pm.add_hookspecs(ctfhost.hookspecs)
    specs = {}
    for name, caller in vars(pm.hook).items():
        spec = getattr(caller, "spec", None)
        if spec is not None:
            specs[name] = (spec.function, bool(spec.opts.get("firstresult")))
    return specs


HOOKS = hookspecs()
HOOK_NAMES = sorted(HOOKS)


def doc_sections():
    """{hook name: (signature text, section text)} for every `### name(...)` heading."""
    text = PLUGIN_DOCS.read_text()
    matches = list(HEADING.finditer(text))
    sections = {}
    for match, following in zip(matches, matches[1:] + [None]):
        end = following.start() if following else len(text)
        sections[match.group(1)] = (f"({match.group(2)})", text[match.end():end])
    return sections


def flat(text):
    return " ".join((text or "").split())


def test_hookspecs_are_found():
    # guards the tests below against an empty parametrization
    assert {"launch", "destroy", "route", "authorize", "collect_weights"} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_is_documented_with_its_signature(name):
    sections = doc_sections()
    assert name in sections, f"docs/plugins.md has no '### {name}(' section"
    documented, _ = sections[name]
    actual = str(inspect.signature(HOOKS[name][0]))
    assert documented == actual, f"docs/plugins.md documents {name}{documented}, the hookspec is {name}{actual}"


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_section_has_an_example_and_states_firstresult(name):
    _, section = doc_sections()[name]
    assert "```python" in section, f"the docs section of {name} has no example"
    assert f"def {name}(" in section, f"the example in the docs section of {name} does not implement it"
    firstresult = HOOKS[name][1]
    if firstresult:
        assert FIRSTRESULT in flat(section), f"{name} is firstresult; its docs must say {FIRSTRESULT!r}"
    else:
        assert FIRSTRESULT not in flat(section), f"{name} is not firstresult; its docs must not say {FIRSTRESULT!r}"


def test_no_docs_for_hooks_that_do_not_exist():
    stale = sorted(set(doc_sections()) - set(HOOKS))
    assert not stale, f"docs/plugins.md documents hooks that hookspecs.py does not define: {stale}"


def test_hooks_are_documented_in_hookspec_order():
    order = [name for name, _ in inspect.getmembers(ctfhost.hookspecs, inspect.isfunction) if name in HOOKS]
    order.sort(key=lambda name: HOOKS[name][0].__code__.co_firstlineno)
    assert [name for name in doc_sections() if name in HOOKS] == order


def hook_test_files():
    """Every test module the hook-test search reads: tests/ and plugins/*/tests."""
    return sorted(ROOT.glob("tests/**/*.py")) + sorted(ROOT.glob("plugins/*/tests/**/*.py"))


def test_hook_test_search_reads_this_directory():
    assert Path(__file__).resolve() in hook_test_files()


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_has_a_test(name):
    pattern = re.compile(rf"^\s*(async\s+)?def test_hook_{name}\(", re.MULTILINE)
    found = [path for path in hook_test_files() if pattern.search(path.read_text())]
    assert found, f"no test_hook_{name} function under tests/ or plugins/*/tests"


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_docstring(name):
    function, firstresult = HOOKS[name]
    doc = inspect.getdoc(function)
    assert doc, f"hookspec {name} has no docstring"
    lines = doc.splitlines()
    summary = lines[0].strip()
    assert summary and summary.endswith("."), f"hookspec {name} needs a one-line summary ending with a period"
    assert len(lines) == 1 or not lines[1].strip(), f"the summary line of hookspec {name} must stand alone"
    if firstresult:
        assert FIRSTRESULT in flat(doc), f"hookspec {name} is firstresult; its docstring must say {FIRSTRESULT!r}"
    else:
        assert FIRSTRESULT not in flat(doc), f"hookspec {name} is not firstresult; its docstring must not say {FIRSTRESULT!r}"
    for parameter in inspect.signature(function).parameters:
        assert f":param {parameter}:" in doc, f"hookspec {name} does not describe its argument {parameter!r}"
    assert ":return:" in doc, f"hookspec {name} does not say what it returns"


def plugin_api_section():
    """The text of the `## The plugin API` section of docs/plugins.md."""
    text = PLUGIN_DOCS.read_text()
    start = text.index("## The plugin API")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def test_the_plugin_api_section_states_the_compatibility_promise():
    section = flat(plugin_api_section())
    assert "ctfhost.plugin_api.__all__" in section
    assert "deprecation path" in section and "DeprecationWarning" in section


@pytest.mark.parametrize("name", sorted(plugin_api.__all__))
def test_plugin_api_name_is_documented(name):
    documented = re.findall(r"^\| `(\w+)` \|", plugin_api_section(), re.MULTILINE)
    assert name in documented, f"docs/plugins.md's plugin API table has no row for `{name}`"


def test_no_docs_for_plugin_api_names_that_do_not_exist():
    documented = re.findall(r"^\| `(\w+)` \|", plugin_api_section(), re.MULTILINE)
    assert sorted(set(documented) - set(plugin_api.__all__)) == []
