"""Finding the user's Router from a locator such as ``app.router``.

Accepted forms: ``module:attr``, ``module.attr`` and ``path/to/file.py:attr``
(``attr`` may be dotted).  The current directory is importable, as it is for
``python -m``; ``app_dir`` puts another directory first.  Every failure is a
:class:`LoadError` whose message is one line naming the module, attribute or
file, and, for an error raised inside the user's own module, the real cause
with the file and line it came from.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import LoadError
from .router.core import Router


def load_router(locator: str, app_dir: str | os.PathLike[str] | None = None) -> Router:
    """Import what ``locator`` names and return it, refusing anything but a Router."""
    _extend_path(app_dir)
    module_part, attr = _split(locator)
    module = _import(module_part, app_dir)
    target = _lookup(module, attr, locator)
    if not isinstance(target, Router):
        kind = type(target).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise LoadError(
            f"{locator!r} is {article} {kind}, not an emitcli Router" + _routers_hint(module)
        )
    return target


def find_loaded(locator: str) -> Any:
    """What ``locator`` names among the modules already imported, importing nothing.

    ``None`` when it names nothing loaded.  How a worker started for one graph
    checks a job's locator: loading it to compare would run whatever code the
    job names.
    """
    try:
        module_part, attr = _split(locator)
    except LoadError:
        return None
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        path = str(Path(module_part).resolve())
        found = [m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == path]
        target: Any = found[0] if found else None
    else:
        target = sys.modules.get(module_part)
    for part in attr.split("."):
        target = getattr(target, part, None)
    return target


def _extend_path(app_dir: str | os.PathLike[str] | None) -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if not os.path.isdir(path):
            raise LoadError(f"--app-dir {str(app_dir)!r} is not a directory")
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def _split(locator: str) -> tuple[str, str]:
    if ":" in locator:
        module, _, attr = locator.rpartition(":")
    elif "." in locator and not locator.endswith(".py"):
        module, _, attr = locator.rpartition(".")
    else:
        raise LoadError(
            f"{locator!r} does not name a router; write module:attr, module.attr "
            "or path/to/file.py:attr (for example app:router)"
        )
    if not module or not attr:
        raise LoadError(f"{locator!r} is missing a module or an attribute name")
    return module, attr


def _import(module: str, app_dir: str | os.PathLike[str] | None) -> ModuleType:
    if module.endswith(".py") or os.sep in module or "/" in module:
        return _import_file(_locate_file(Path(module), app_dir), app_dir)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise LoadError(
                f"no module named {exc.name!r} (looked in {_where_looked(app_dir)})"
            ) from exc
        raise LoadError(f"importing {module!r} failed: {_cause(exc)}") from exc
    except Exception as exc:
        raise LoadError(f"importing {module!r} failed: {_cause(exc)}") from exc


def _locate_file(path: Path, app_dir: str | os.PathLike[str] | None) -> Path:
    """The file a path locator names: as given, else relative to --app-dir."""
    if not path.is_file() and app_dir is not None and not path.is_absolute():
        candidate = Path(app_dir) / path
        if candidate.is_file():
            return candidate
    if not path.is_file():
        raise LoadError(f"no file {str(path)!r}")
    return path


def _import_file(path: Path, app_dir: str | os.PathLike[str] | None = None) -> ModuleType:
    # A file inside a package (folders holding __init__.py) is imported as a
    # module of that package, so that its relative imports work.
    parts = [path.resolve().stem]
    folder = path.resolve().parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if len(parts) > 1:
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        return _import(".".join(parts), app_dir)
    folder_name = str(folder)
    if folder_name not in sys.path:
        sys.path.insert(0, folder_name)
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
        return sys.modules[name]
    if _taken(name, path):
        # Loading it under that name would replace the other module for every
        # later import in the process, the standard library's included.
        raise LoadError(
            f"{str(path)!r} has the name of the module {name!r} that Python already has; "
            "rename the file"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{str(path)!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise LoadError(f"importing {str(path)!r} failed: {_cause(exc)}") from exc
    return module


def _lookup(module: ModuleType, attr: str, locator: str) -> Any:
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(
                f"module {module.__name__!r} has no attribute {attr!r}" + _routers_hint(module)
            ) from None
    return target


def _routers_hint(module: ModuleType) -> str:
    names = sorted(k for k, v in vars(module).items() if isinstance(v, Router))
    mine = Path(*module.__name__.split(".")).with_suffix(".py")
    found = getattr(module, "__file__", None)
    if not names and mine.is_file() and (found is None or Path(found) != mine.resolve()):
        # ``calendar:router`` with a calendar.py here imports Python's own calendar.
        return (
            f" ({module.__name__!r} is the module at {found or 'built in'}, not ./{mine}, "
            f"which Python's module of that name hides: rename your file)"
        )
    if not names:
        return f" (no Router is defined at the top of {module.__name__!r})"
    return f" (Routers in {module.__name__!r}: {', '.join(names)})"


def _taken(name: str, path: Path) -> bool:
    """Whether ``name`` already belongs to another module than the file at ``path``."""
    if name in sys.modules:
        return True
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin != str(path.resolve())


_OWN = os.path.dirname(os.path.abspath(__file__))


def _cause(exc: BaseException) -> str:
    """``Type: text (file, line N)`` of the user's deepest frame.

    Frames of the import machinery and of emit itself are passed over: a graph
    error raised while the module registers its nodes belongs to the user's line.
    """
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "importlib" not in f.filename
        and not f.filename.startswith("<frozen")
        and not os.path.abspath(f.filename).startswith(_OWN)
    ]
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    elif frames:
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})"
    text = str(exc) if not isinstance(exc, SyntaxError) else (exc.msg or str(exc))
    return f"{type(exc).__name__}: {text}{where}"


def _where_looked(app_dir: str | os.PathLike[str] | None) -> str:
    # The folders a user can change; sys.path[0] of a console script is the
    # folder of the script itself, which would only mislead here.
    shown = [os.path.abspath(app_dir)] if app_dir is not None else []
    shown.append(os.getcwd())
    return (
        ", ".join(shown)
        + " and the installed packages; run from your project's folder or pass --app-dir"
    )
