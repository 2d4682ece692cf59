"""Finding the Router a locator names, and saying clearly why when it cannot be found.

The forms are ``module:attr``, ``module.attr`` and ``path/to/file.py:attr``; the
current directory is importable and ``--app-dir`` puts another first.  Each
failure is one line on stderr and exit code 2; ``--verbose`` adds the traceback.
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emitcli import Router
from emitcli.errors import LoadError
from emitcli.loader import find_loaded, load_router

ROOT = Path(__file__).resolve().parents[1]
EMIT = str(Path(sys.executable).with_name("emit"))
GRAPHS = "tests.graphs.cli_graphs"
TIMEOUT = 60
# The error lines are checked as plain text, whatever the shell has set.
ENV = {
    key: value
    for key, value in os.environ.items()
    if key not in {"FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"}
}

GRAPH_SOURCE = """\
from emitcli import Router

router = Router()


@router.node(("line",), entry_point=True)
def tag(msg):
    return TAG + msg.line
"""


def write_graph(folder, name, tag, extra=""):
    """A graph module ``name`` in ``folder`` whose node prefixes each line with ``tag``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(GRAPH_SOURCE.replace("TAG", repr(tag)) + extra)
    return path


def emit_run(*args, cwd=ROOT, stdin=b"x\n"):
    return subprocess.run(
        [EMIT, "run", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=ENV,
        timeout=TIMEOUT,
        check=False,
    )


def lines(stdout):
    """The ``line`` field of each output object."""
    return [json.loads(line)["line"] for line in stdout.decode().split("\n")[:-1]]


@pytest.fixture
def clean_imports(monkeypatch):
    """Undo what loading does to the process: sys.path entries and new modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


# The forms of a locator, in this process ----------------------------------


@pytest.mark.usefixtures("clean_imports")
@pytest.mark.parametrize("locator", [f"{GRAPHS}:echo", f"{GRAPHS}.echo"])
def test_module_colon_and_module_dot_attribute_name_the_same_router(monkeypatch, locator):
    monkeypatch.chdir(ROOT)

    router = load_router(locator)

    assert router is importlib.import_module(GRAPHS).echo


@pytest.mark.usefixtures("clean_imports")
def test_an_attribute_path_after_the_colon_may_be_dotted(tmp_path, monkeypatch):
    extra = "\n\nclass Graphs:\n    main = router\n"
    write_graph(tmp_path, "held_graph", "held:", extra)
    monkeypatch.chdir(tmp_path)

    router = load_router("held_graph:Graphs.main")

    assert router is sys.modules["held_graph"].router


@pytest.mark.usefixtures("clean_imports")
def test_a_file_path_loads_the_file_and_lets_it_import_its_neighbours(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "neighbour_settings.py").write_text("PREFIX = 'file:'\n")
    source = GRAPH_SOURCE.replace("TAG", "PREFIX")
    (folder / "file_graph.py").write_text("from neighbour_settings import PREFIX\n" + source)
    monkeypatch.chdir(tmp_path)

    router = load_router("project/file_graph.py:router")

    assert isinstance(router, Router)
    assert router(line="x")[0].line == "file:x"
    assert load_router(f"{folder / 'file_graph.py'}:router").nodes.keys() == router.nodes.keys()


@pytest.mark.usefixtures("clean_imports")
def test_the_current_directory_is_importable(tmp_path, monkeypatch):
    write_graph(tmp_path, "here_graph", "here:")
    monkeypatch.chdir(tmp_path)

    assert load_router("here_graph:router")(line="x")[0].line == "here:x"


@pytest.mark.usefixtures("clean_imports")
def test_app_dir_is_importable_and_searched_before_the_current_directory(tmp_path, monkeypatch):
    write_graph(tmp_path / "cwd", "twin_graph", "cwd:")
    write_graph(tmp_path / "apps", "twin_graph", "app dir:")
    monkeypatch.chdir(tmp_path / "cwd")

    router = load_router("twin_graph:router", app_dir=tmp_path / "apps")

    assert router(line="x")[0].line == "app dir:x"


# The forms of a locator, from the shell -----------------------------------


def test_emit_run_finds_a_module_in_the_directory_it_runs_in(tmp_path):
    write_graph(tmp_path, "shell_graph", "shell:")

    for locator in ["shell_graph:router", "shell_graph.router", "shell_graph.py:router"]:
        result = emit_run(locator, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert lines(result.stdout) == ["shell:x"]


def test_emit_run_with_app_dir_prefers_it_to_the_current_directory(tmp_path):
    write_graph(tmp_path / "cwd", "twin_graph", "cwd:")
    write_graph(tmp_path / "apps", "twin_graph", "app dir:")

    with_app_dir = emit_run(
        "--app-dir", str(tmp_path / "apps"), "twin_graph:router", cwd=tmp_path / "cwd"
    )
    without = emit_run("twin_graph:router", cwd=tmp_path / "cwd")

    assert lines(with_app_dir.stdout) == ["app dir:x"]
    assert lines(without.stdout) == ["cwd:x"]


def test_emit_run_loads_a_graph_by_file_path_from_anywhere(tmp_path):
    path = write_graph(tmp_path / "elsewhere", "path_graph", "path:")

    result = emit_run(f"{path}:router", cwd=ROOT)

    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == ["path:x"]


# Failures: one line on stderr, exit code 2 ----------------------------------


def line_of(path, text):
    """The number of the line of ``path`` that contains ``text``."""
    numbered = enumerate(Path(path).read_text().splitlines(), 1)
    return next(number for number, line in numbered if text in line)


def assert_one_line_and_exit_2(result):
    assert result.returncode == 2
    assert result.stdout == b""
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("emit: ")
    return line


def test_a_missing_module_is_named_with_where_emit_looked(tmp_path):
    line = assert_one_line_and_exit_2(emit_run("absent_graph_module:router", cwd=tmp_path))

    assert line.startswith("emit: no module named 'absent_graph_module' (looked in ")
    assert str(tmp_path) in line
    assert "--app-dir" in line
    assert ".venv/bin" not in line


def test_a_missing_module_inside_an_existing_package_is_named_in_full():
    line = assert_one_line_and_exit_2(emit_run("tests.graphs.absent:router"))

    assert line.startswith("emit: no module named 'tests.graphs.absent' ")


def test_a_missing_attribute_is_named_with_the_routers_the_module_has():
    line = assert_one_line_and_exit_2(emit_run(f"{GRAPHS}:missing"))

    assert line.startswith(f"emit: module {GRAPHS!r} has no attribute 'missing' (Routers in ")
    assert "echo" in line
    assert "stages" in line


def test_an_error_raised_while_importing_the_users_module_shows_the_cause_and_file():
    broken = ROOT / "tests" / "graphs" / "broken_import.py"
    number = line_of(broken, "undefined_setting")

    line = assert_one_line_and_exit_2(emit_run("tests.graphs.broken_import:router"))

    assert line == (
        "emit: importing 'tests.graphs.broken_import' failed: NameError: name "
        f"'undefined_setting' is not defined ({broken}, line {number})"
    )


def test_a_missing_dependency_of_the_users_module_is_not_mistaken_for_the_module(tmp_path):
    write_graph(tmp_path, "needs_dependency", "x", extra="\nimport absent_dependency_of_graph\n")
    path = tmp_path / "needs_dependency.py"

    line = assert_one_line_and_exit_2(emit_run("needs_dependency:router", cwd=tmp_path))

    assert "No module named 'absent_dependency_of_graph'" in line
    assert f"({path}, line {line_of(path, 'import absent_dependency')})" in line
    assert "no module named 'needs_dependency'" not in line


def test_a_syntax_error_in_a_graph_file_shows_the_file_and_line(tmp_path):
    path = tmp_path / "typo_graph.py"
    path.write_text("from emitcli import Router\n\nrouter = Router(\n\ndef f(:\n    pass\n")

    line = assert_one_line_and_exit_2(emit_run(f"{path}:router"))

    assert "SyntaxError" in line
    assert str(path) in line


def test_an_object_that_is_not_a_router_is_refused_naming_its_type():
    line = assert_one_line_and_exit_2(emit_run(f"{GRAPHS}:not_a_router"))

    assert line.startswith(f"emit: '{GRAPHS}:not_a_router' is a dict, not an emitcli Router")


def test_an_integer_is_refused_with_an_and_a_function_with_a():
    for name, says in [("an_int", "is an int,"), ("a_function", "is a function,")]:
        line = assert_one_line_and_exit_2(emit_run(f"{GRAPHS}:{name}"))
        assert f"'{GRAPHS}:{name}' {says} not an emitcli Router" in line


def test_a_graph_file_hidden_by_a_module_python_has_is_named_as_the_cause(tmp_path):
    write_graph(tmp_path, "calendar", "x")

    line = assert_one_line_and_exit_2(emit_run("calendar:router", cwd=tmp_path))

    assert "not ./calendar.py, which Python's module of that name hides: rename your file" in line


@pytest.mark.parametrize(
    ("locator", "says"),
    [
        ("justaname", "does not name a router"),
        ("tests.graphs.cli_graphs:", "missing a module or an attribute name"),
        (":router", "missing a module or an attribute name"),
        ("tests/graphs/absent_file.py:router", "no file 'tests/graphs/absent_file.py'"),
        ("tests/graphs/cli_graphs.py", "does not name a router"),
    ],
)
def test_a_locator_that_names_nothing_is_refused_with_the_forms_it_can_take(locator, says):
    line = assert_one_line_and_exit_2(emit_run(locator))

    assert says in line


def test_an_app_dir_that_is_not_a_directory_is_refused(tmp_path):
    line = assert_one_line_and_exit_2(
        emit_run("--app-dir", str(tmp_path / "nowhere"), f"{GRAPHS}:echo")
    )

    assert "is not a directory" in line


def test_verbose_adds_the_traceback_before_the_one_line():
    broken = ROOT / "tests" / "graphs" / "broken_import.py"

    result = emit_run("--verbose", "tests.graphs.broken_import:router")

    assert result.returncode == 2
    text = result.stderr.decode()
    *trace, last = text.splitlines()
    assert trace[0] == "Traceback (most recent call last):"
    assert f'File "{broken}", line {line_of(broken, "undefined_setting")}, in <module>' in text
    assert trace[-1] == "NameError: name 'undefined_setting' is not defined"
    assert last.startswith("emit: importing 'tests.graphs.broken_import' failed: NameError")


def test_the_error_raised_to_the_library_caller_is_a_load_error_with_the_cause(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))

    with pytest.raises(LoadError) as caught:
        load_router("tests.graphs.broken_import:router")

    assert isinstance(caught.value.__cause__, NameError)
    assert "tests.graphs.broken_import" not in sys.modules


def test_find_loaded_knows_every_name_of_a_loaded_router_and_imports_nothing(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    router = load_router("examples.rq.graph:router")
    names = ["examples.rq.app:router", "examples.rq.graph.router", "examples/rq/graph.py:router"]

    assert [find_loaded(name) for name in names] == [router] * 3
    assert find_loaded("this:router") is None
    assert find_loaded("examples/rq/tasks.py:nothing") is None
    assert "this" not in sys.modules
