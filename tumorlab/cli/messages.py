"""One line for a config error that jsonargparse reports as a page (usage plus a dump of union subtypes).

``tumorlab: error: unknown key 'data.image_sise' (did you mean 'data.image_size'?)``. Written by hand because
jsonargparse has no short format of its own; the full usage stays one ``--help`` away.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
from collections.abc import Iterable

from tumorlab.errors import TumorlabError

__all__ = ["command_options", "error_line", "one_line", "report_error", "user_error"]


def error_line(err: BaseException) -> str:
    """The error's own message; for one re-raised from a DataLoader worker, the last line of its traceback."""
    text = str(err)
    if "\nOriginal Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def user_error(err: BaseException | None) -> TumorlabError | None:
    """The ``TumorlabError`` that ``err`` is or was caused by (jsonargparse wraps errors raised while it
    instantiates classes), or ``None``: an error of the user's, reported in one line, not a traceback."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, TumorlabError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def report_error(err: Exception) -> int:
    """Print a user's error (``user_error``) as ``tumorlab: error: <one line>`` and return exit status 2;
    re-raise any other error (a bug shows its traceback)."""
    cause = user_error(err)
    if cause is None:
        raise err
    print(f"tumorlab: error: {error_line(cause)}", file=sys.stderr)
    return 2


def _class_parameters(class_path: str) -> list[str]:
    """Constructor argument names of ``class_path`` and of every base class whose ``__init__`` it extends."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in getattr(cls, "__mro__", (cls,)):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.name != "self" and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                names.append(param.name)
    return list(dict.fromkeys(names))


def _suggest(wrong: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(wrong, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_line(message: str, options: Iterable[str] = ()) -> str:
    """The user's error in one line, from a jsonargparse message; ``options`` are the command's ``--keys``."""
    unknown = re.search(r"unrecognized arguments: --([\w.\-]+)", message)
    if unknown:
        key = unknown.group(1).split("=", 1)[0]
        known = [o[2:] for o in options if o.startswith("--")]
        return f"unknown key '{key}'{_suggest(key, known)}"
    chain = re.findall(r'Parser key "([\w.]+)"', message)
    classes = re.findall(r"class_path '([\w.]+)'", message)
    nested = re.search(r"NestedArg\(key='([\w.]+)'", message)
    option = re.search(r"(?:Option|Key) '([\w.]+)' is not (?:accepted|expected)", message)
    if option and chain:
        wrong = option.group(1)
        key = f"{chain[0]}.{nested.group(1)}" if nested else ".init_args.".join([*chain, wrong])
        hint = ""
        if classes:
            close = difflib.get_close_matches(wrong, _class_parameters(classes[-1]), n=1, cutoff=0.6)
            if close:
                hint = f" (did you mean '{key[: len(key) - len(wrong)]}{close[0]}'?)"
        return f"unknown key '{key}'{hint}"
    wrong_class = re.search(
        r"(?:Expected a dot import path string: |Import path )([\w.]+)|No module named '([\w.]+)'", message
    )
    if wrong_class and chain:
        key = ".".join(chain)
        given = re.search(r"Given value: ([\w.]+)", message)
        if wrong_class.group(2) and given:
            return f"cannot import '{given.group(1)}' for '{key}': no module named '{wrong_class.group(2)}'"
        name = wrong_class.group(1) or wrong_class.group(2)
        return f"unknown class '{name}' for '{key}'{_suggest(name.rsplit('.', 1)[-1], _known_classes(chain[-1]))}"
    expected = re.search(r"Expected a (<class '(\w+)'>|[^\n.]+)\.? Got value: ([^\n]+)", message)
    if expected and chain:
        kind = expected.group(2) or expected.group(1)
        key = f"{chain[0]}.{nested.group(1)}" if nested else ".".join(chain)
        return f"invalid value for '{key}': expected {kind}, got {expected.group(3).strip()}"
    given = re.search(r"Given value: ([^\n]+)", message)
    if chain and given and "Union subtypes" in message:  # an Optional[int] key: one "Expected" per subtype
        kinds = [k for k in re.findall(r"Expected a <class '(\w+)'>", message) if k != "NoneType"]
        key = f"{chain[0]}.{nested.group(1)}" if nested else ".".join(chain)
        kind = " or ".join(kinds) or "another type"
        return f"invalid value for '{key}': expected {kind}, got {given.group(1).strip()}"
    noise = ("Given value", "Subtypes:", "Errors:", "Does not validate", "Parser key", "Problem with given class_path")
    lines = [ln.strip().lstrip("- ") for ln in message.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(noise) and "NoneType" not in ln]
    return lines[-1] if lines else message.strip().splitlines()[0]


def _known_classes(key: str) -> list[str]:
    """The short class names a key accepts among tumorlab's own (``data``, ``model``, ``net``)."""
    import tumorlab.data.modules
    import tumorlab.models
    import tumorlab.tasks

    if key == "data":
        return [n for n in tumorlab.data.__all__ if n.endswith("DataModule")]
    models = [n for n in tumorlab.models.__all__ if n[0].isupper()]
    return models if key == "net" else [*tumorlab.tasks.__all__, *models]


def command_options(parser, args: list[str]) -> list[str]:
    """The option strings of the subcommand that ``args`` starts with (for "did you mean")."""
    for action in parser._actions:  # argparse keeps subcommand parsers in this private map only
        sub = getattr(action, "_name_parser_map", {}).get(args[0] if args else None)
        if sub is not None:
            return list(sub._option_string_actions)
    return []
