"""Every CTFHOST_* setting the code reads is documented, every one the docs name is read, and documented defaults are true.

The code is scanned, not imported: core settings come from ctfhost.config.SETTINGS; plugins read
theirs through a settings helper (`setting("NETWORK")` with the plugin's prefix, the shared
`plugin_setting("DOCKER", "NETWORK", default)`, `core_setting("API_KEY")`), through names kept in `*SETTINGS*` constants and
`*_setting(s)=` arguments, or as whole `"CTFHOST_..."` strings (environment and app.config reads).
"""

import ast
import functools
import os
import re
from pathlib import Path

import pytest

from ctfhost.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"^CTFHOST_[A-Z0-9]+(?:_[A-Z0-9]+)*$")
SUFFIX = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
# the prefix a plugin's settings helper puts before the names it is given
PLUGIN_PREFIXES = {
    "docker_runtime": "CTFHOST_DOCKER_",
    "traefik": "CTFHOST_TRAEFIK_",
    "kctf_runtime": "CTFHOST_",
    "kata_runtime": "CTFHOST_",
    "ctfd": "CTFHOST_",
}
# helpers of the Kubernetes runtimes that take a setting name first
NAME_READERS = {"flag", "number", "parse_cidrs"}
# a shell script or manifest reading an environment variable
SHELL_READ = re.compile(r"\$\{?(CTFHOST_[A-Z0-9]+(?:_[A-Z0-9]+)*)")
# a name in the docs; one followed by `_*`, `_<` or `*` is a pattern (CTFHOST_K8S_*), not a setting
DOC_NAME = re.compile(r"CTFHOST_[A-Z0-9]+(?:_[A-Z0-9]+)*(?![A-Za-z0-9_<*])")
# names the docs use for settings of made-up example plugins (docs/plugins.md)
EXAMPLES = {"CTFHOST_PODMAN_NETWORK", "CTFHOST_TEAMAUTH_SECRET", "CTFHOST_KOTH_CHALLENGES"}
SKIPPED_DIRS = {".git", ".venv", ".pytest_cache", "__pycache__", "node_modules", "instance", ".demo"}


def source_files(pattern):
    """Files of the repository matching `pattern`, outside virtualenvs, caches and build output."""
    return [path for path in repository_files() if path.match(pattern) and path.is_file()]


@functools.lru_cache(maxsize=1)
def repository_files():
    found = []
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
        found.extend(Path(directory) / name for name in sorted(files))
    return found


def is_test(path):
    parts = path.relative_to(ROOT).parts
    return "tests" in parts or path.name.startswith("test_") or path.name == "conftest.py"


def owner(path):
    """The plugin folder name for files under plugins/<name>/, else "core"."""
    parts = path.relative_to(ROOT).parts
    return parts[1] if parts[0] == "plugins" and len(parts) > 2 else "core"


def call_name(node):
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def strings(node):
    """Every string constant in `node` (an argument, a tuple of them, a dict)."""
    return [sub.value for sub in ast.walk(node) if isinstance(sub, ast.Constant) and isinstance(sub.value, str)]


def full_name(prefix, text):
    if NAME.match(text):
        return text
    return prefix + text if SUFFIX.match(text) else None


def helper_prefix(call):
    """The prefix a `plugin_setting(prefix, name, ...)` call names ("CTFHOST_" for `core_setting(name)`), or None."""
    if call_name(call).lower().startswith("core"):
        return "CTFHOST_"
    if "plugin" not in call_name(call).lower() or not call.args:
        return None
    first = call.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    text = first.value.strip("_")
    if not text:
        return "CTFHOST_"
    return (text if text.startswith("CTFHOST") else f"CTFHOST_{text}") + "_"


def names_read_by(path, prefix):
    """{CTFHOST_* name} a Python file reads (see the module docstring)."""
    names = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        texts = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.match(node.value):
            names.add(node.value)
        elif isinstance(node, ast.Call):
            name = call_name(node)
            explicit = helper_prefix(node)
            if explicit is not None:
                arg_names = node.args[:1] if name.lower().startswith("core") else node.args[1:2]
                names.update(filter(None, (full_name(explicit, text) for arg in arg_names for text in strings(arg))))
            elif "setting" in name.lower() or name in NAME_READERS:
                texts = [text for arg in node.args[:1] for text in strings(arg)]
            texts += [text for keyword in node.keywords if "setting" in (keyword.arg or "").lower()
                      for text in strings(keyword.value)]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(isinstance(t, ast.Name) and "SETTINGS" in t.id for t in targets):
                texts = [text for text in strings(node.value)]
        names.update(filter(None, (full_name(prefix, text) for text in texts)))
    return names


def module_constants(tree):
    """{NAME: value} of a module's top-level `NAME = <constant>` assignments."""
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = node.value.value
    return constants


def literal(node, constants):
    if isinstance(node, ast.Constant):
        return node.value
    return constants.get(node.id) if isinstance(node, ast.Name) else None


def defaults_in(path, prefix):
    """{CTFHOST_* name: default} for the helper reads of a Python file that give a literal default."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = module_constants(tree)
    defaults = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        explicit = helper_prefix(node)
        args = node.args[1:] if explicit is not None and not call_name(node).lower().startswith("core") else node.args
        keywords = {keyword.arg: keyword.value for keyword in node.keywords if keyword.arg}
        for key, value in keywords.items():
            if not key.endswith("settings") and key.endswith("setting") and isinstance(value, ast.Constant):
                # Profile(runtime_class_setting="KATA_RUNTIME_CLASS", runtime_class_default=...)
                default = literal(keywords.get(key.removesuffix("setting") + "default", ast.Constant(None)), constants)
                if full_name(prefix, value.value) and default is not None:
                    defaults[full_name(prefix, value.value)] = default
            elif key.endswith("settings") and isinstance(value, ast.Tuple):
                # overhead_settings=(("KATA_POD_OVERHEAD_CPU", "250m"), ...)
                for pair in value.elts:
                    if isinstance(pair, ast.Tuple) and len(pair.elts) == 2 and isinstance(pair.elts[0], ast.Constant):
                        default = literal(pair.elts[1], constants)
                        if full_name(prefix, pair.elts[0].value) and default is not None:
                            defaults[full_name(prefix, pair.elts[0].value)] = default
        if explicit is None and "setting" not in call_name(node).lower() and call_name(node) not in NAME_READERS:
            continue
        if len(args) < 2 or not isinstance(args[0], ast.Constant) or not isinstance(args[0].value, str):
            continue
        name, default = full_name(explicit or prefix, args[0].value), literal(args[1], constants)
        if name and default is not None:
            defaults[name] = default
    return defaults

def code_reads():
    """{CTFHOST_* name: {reader}} for everything outside the tests; reader is "core" or a plugin folder."""
    reads = {}
    for name in SETTINGS:
        reads.setdefault(f"CTFHOST_{name}", set()).add("core")
    for path in source_files("*.py"):
        if is_test(path):
            continue
        reader = owner(path)
        for name in names_read_by(path, PLUGIN_PREFIXES.get(reader, "CTFHOST_")):
            reads.setdefault(name, set()).add(reader)
    for path in [*source_files("*.sh"), ROOT / ".ci" / "run", ROOT / "Makefile"]:
        if path.exists():
            for name in SHELL_READ.findall(path.read_text(encoding="utf-8")):
                reads.setdefault(name, set()).add(owner(path))
    return reads


@functools.lru_cache(maxsize=1)
def names_read_anywhere():
    """Names read by code, tests (opt-in test switches) or manifests (deploy/): what the docs may name."""
    names = set(READS)
    for path in source_files("*.py"):
        if is_test(path) and path != Path(__file__).resolve():
            names |= names_read_by(path, "CTFHOST_")
    for pattern in ("*.yaml", "*.yml"):
        for path in source_files(pattern):
            names.update(DOC_NAME.findall(path.read_text(encoding="utf-8")))
    return frozenset(names)


def doc_files():
    return list(source_files("*.md"))


def documented_in(paths):
    names = set()
    for path in paths:
        if path.exists():
            names.update(DOC_NAME.findall(path.read_text(encoding="utf-8")))
    return names


GENERAL_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
READS = code_reads()


def test_the_scan_finds_each_way_settings_are_read():
    # guards the tests below: one name read in each way the scan knows
    expected = {
        "CTFHOST_RECONCILE_INTERVAL_SECONDS": "core",  # config.SETTINGS
        "CTFHOST_ADMIN_TOKEN_FILE": "core",  # os.environ / app.config
        "CTFHOST_DOCKER_PIDS_LIMIT": "docker_runtime",  # the docker plugin's helper
        "CTFHOST_TRAEFIK_CACHE_SECONDS": "traefik",
        "CTFHOST_K8S_POLL_SECONDS": "kctf_runtime",  # number("K8S_...")
        "CTFHOST_K8S_CA_FILE": "kctf_runtime",  # CONNECTION_SETTINGS
        "CTFHOST_KATA_POD_OVERHEAD_MEMORY": "kata_runtime",  # Profile(overhead_settings=...)
        "CTFHOST_KATA_RUNTIME_CLASS": "kata_runtime",  # Profile(runtime_class_setting=...)
        "CTFHOST_RENEW_MIN_SECONDS": "ctfd",  # the CTFd side's environment fallback
        "CTFHOST_STATE_DIR": "core",  # scripts/system.sh
    }
    missing = {name: reader for name, reader in expected.items() if reader not in READS.get(name, set())}
    assert not missing, f"the scan no longer finds these reads: {missing}"


def test_every_setting_the_code_reads_is_documented():
    general = documented_in(GENERAL_DOCS)
    undocumented = {}
    for name, readers in sorted(READS.items()):
        for reader in sorted(readers):
            own = ROOT / "plugins" / reader / "README.md" if reader != "core" else None
            if name not in general and not (own and name in documented_in([own])):
                where = f"plugins/{reader}/README.md, " if own else ""
                undocumented.setdefault(name, f"read by {reader}; document it in {where}README.md or docs/*.md")
    assert not undocumented, f"settings read but not documented: {undocumented}"


@pytest.mark.parametrize("plugin", sorted(set(PLUGIN_PREFIXES) - {"ctfd", "kctf_runtime", "kata_runtime"}))
def test_a_plugins_own_settings_are_in_its_readme(plugin):
    prefix = PLUGIN_PREFIXES[plugin]
    readme = documented_in([ROOT / "plugins" / plugin / "README.md"])
    own = {name for name, readers in READS.items() if plugin in readers and name.startswith(prefix)}
    assert own, f"found no {prefix}* setting read by plugins/{plugin}"
    assert not own - readme, f"plugins/{plugin}/README.md does not document {sorted(own - readme)}"


def test_the_kubernetes_settings_are_in_the_kctf_readme():
    # kata shares the kctf runtime's code and points to its README for CTFHOST_K8S_*
    kube = {name for name, readers in READS.items() if name.startswith("CTFHOST_K8S_")}
    kata = {name for name, readers in READS.items() if "kata_runtime" in readers}
    assert not kube - documented_in([ROOT / "plugins" / "kctf_runtime" / "README.md"])
    assert not kata - documented_in([ROOT / "plugins" / "kata_runtime" / "README.md"])


def test_every_core_setting_is_a_row_of_the_readme_settings_table():
    rows = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith("| `CTFHOST_")]
    in_table = {name for row in rows for name in DOC_NAME.findall(row.split("|")[1])}
    missing = sorted(f"CTFHOST_{name}" for name in SETTINGS if f"CTFHOST_{name}" not in in_table)
    assert not missing, f"README.md's settings table has no row for {missing}"


def test_every_setting_the_docs_name_is_read_somewhere():
    read = names_read_anywhere()
    stale = {}
    for path in doc_files():
        for name in sorted(documented_in([path]) - read - EXAMPLES):
            stale.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not stale, f"the docs name settings nothing reads: {stale}"


def test_example_settings_stay_examples():
    named = documented_in(doc_files())
    assert EXAMPLES <= named, f"examples no doc names any more (drop them here): {sorted(EXAMPLES - named)}"
    assert not EXAMPLES & names_read_anywhere(), "an example name is now a real setting: document it as one"


def number(text):
    value = float(text)
    return int(value) if value.is_integer() else value


# `CTFHOST_X` (60 s) / `CTFHOST_X` (60) / `CTFHOST_X`, 60 s / `CTFHOST_X`, default 60 s
DOC_DEFAULT = re.compile(r"`(CTFHOST_[A-Z0-9_]+)`(?:\s*\(|,)\s*(?:default\s+)?(\d+(?:\.\d+)?)(?=\s*s\b|\s*\))")


def documented_defaults():
    """[(file, name, number)] for every default the docs state next to a core setting."""
    found = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for match in DOC_DEFAULT.finditer(" ".join(text.split())):
            found.append((str(path.relative_to(ROOT)), match.group(1), number(match.group(2))))
        for line in text.splitlines():
            cells = [cell.strip() for cell in line.split("|")[1:-1]]
            if path.name == "README.md" and len(cells) == 3 and cells[0].startswith("`CTFHOST_"):
                names = DOC_NAME.findall(cells[0])
                values = re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])", cells[2])
                if len(names) == 1 and values:
                    found.append((str(path.relative_to(ROOT)), names[0], number(values[0])))
    numeric = {f"CTFHOST_{name}" for name, (kind, _) in SETTINGS.items() if kind in (int, float)}
    return [(where, name, value) for where, name, value in found if name in numeric]


def test_documented_defaults_are_the_codes():
    stated = documented_defaults()
    assert any(name == "CTFHOST_RECONCILE_INTERVAL_SECONDS" for _, name, _ in stated)
    wrong = []
    for where, name, value in stated:
        default = SETTINGS[name.removeprefix("CTFHOST_")][1]
        if default != value:
            wrong.append(f"{where}: {name} {value} (the code: {default})")
    assert not wrong, f"docs state defaults the code does not have: {wrong}"


def plugin_table_defaults(plugin):
    """{name: default} from the rows of a plugin README's settings table whose default is one `value`."""
    rows = {}
    for line in (ROOT / "plugins" / plugin / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) == 3 and re.fullmatch(r"`CTFHOST_[A-Z0-9_]+`", cells[0]):
            value = re.fullmatch(r"`([^`]*)`", cells[2])
            if value:
                rows[cells[0].strip("`")] = value.group(1)
    return rows


def same_value(documented, default):
    try:
        return float(documented) == float(default)
    except (TypeError, ValueError):
        return documented == str(default)


@pytest.mark.parametrize("plugin", sorted(set(PLUGIN_PREFIXES) - {"ctfd"}))
def test_plugin_readme_defaults_are_the_codes(plugin):
    code = {}
    for path in source_files("*.py"):
        if owner(path) == plugin and not is_test(path):
            code.update(defaults_in(path, PLUGIN_PREFIXES[plugin]))
    table = plugin_table_defaults(plugin)
    compared = sorted(set(code) & set(table))
    assert compared, f"no setting of plugins/{plugin} has both a literal default and a one-value README row"
    wrong = [f"{name}: README `{table[name]}`, code {code[name]!r}" for name in compared if not same_value(table[name], code[name])]
    assert not wrong, f"plugins/{plugin}/README.md states defaults the code does not have: {wrong}"


# a repository path in backticks: `ctfhost/worker/agent.py`, `plugins/docker_runtime/tests/test_hardening.py`
DOC_PATH = re.compile(r"`((?:ctfhost|plugins|tests|deploy|scripts|bench|docs)/[A-Za-z0-9_./-]+)`")
# a relative Markdown link: [kata](../plugins/kata_runtime/README.md)
DOC_LINK = re.compile(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)")


def test_files_the_docs_name_exist():
    missing = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for named in sorted(set(DOC_PATH.findall(text))):
            if not (ROOT / named).exists() and not (path.parent / named).exists():
                missing.append(f"{path.relative_to(ROOT)}: {named}")
        for link in sorted(set(DOC_LINK.findall(text))):
            if not (path.parent / link).exists():
                missing.append(f"{path.relative_to(ROOT)}: ({link})")
    assert not missing, f"the docs name files that do not exist: {missing}"
