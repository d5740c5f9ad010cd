"""Hyperparameters from the command line: GoMLX's ParseContextSettings and its flag.

Keras is not imported here: `create_context_settings_flag` takes the
defaults as a dict too, so a script can build its parser and answer
`--help` before Keras and JAX load; `ktl.Context` is imported when a
context is given.
"""

from __future__ import annotations

import argparse
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keras_trainloop._describe import short_repr

if TYPE_CHECKING:
    from keras_trainloop.context import Context

SETTINGS_SEPARATOR = ";"
SCOPE_SEPARATOR = "/"
"""`keras_trainloop.context.SCOPE_SEPARATOR`, repeated here so that the flag needs no Keras."""
ROOT_SCOPE = "/"
"""`keras_trainloop.context.ROOT_SCOPE` (likewise)."""


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ValueError("expected true or false")


def _parse_int(text: str) -> int:
    # int() also accepts "1_000_000", as later GoMLX versions do.
    return int(text)


def _element_parser(default: Any):
    """The parser of a scalar default's type, and the type's name for messages."""
    if isinstance(default, bool):
        return _parse_bool, "bool"
    if isinstance(default, numbers.Integral):
        kind = type(default)
        return (lambda text: kind(_parse_int(text))), "int"
    if isinstance(default, numbers.Real):
        kind = type(default)
        return (lambda text: kind(float(text))), "float"
    if isinstance(default, str):
        return str, "str"
    return None, type(default).__name__


def _value_parser(default: Any):
    """Returns `(parse(text) -> value, type name)` for a default value, or `(None, name)`."""
    if isinstance(default, (list, tuple)):
        # Lists are comma separated, as in later GoMLX versions; the element type
        # is the one of the default's elements (str for an empty default).
        parsers = {}
        for element in default:
            parse_element, kind = _element_parser(element)
            parsers[kind] = parse_element
        if {"int", "float"} <= set(parsers) and len(parsers) == 2:
            parsers = {"float": parsers["float"]}
        if not parsers:
            parsers = {"str": str}
        if len(parsers) != 1 or None in parsers.values():
            kinds = " and ".join(sorted(parsers))
            return None, f"{type(default).__name__} of {kinds}"
        ((kind, parse_element),) = parsers.items()
        container = type(default)

        def parse_list(text: str):
            if text == "":
                return container()
            return container(parse_element(part.strip()) for part in text.split(","))

        return parse_list, f"{container.__name__} of {kind}"
    return _element_parser(default)


def parse_context_settings(ctx: Context, settings: str) -> list[str]:
    """Sets hyperparameters from a string such as `"x=13;a/z=true;/a/b/y=3;s=bar"`.

    GoMLX's rules (`commandline.ParseContextSettings`): settings are separated
    by `;` and each is `key=value` or `scope/path/key=value`. The key must
    already have a default value in the root scope of the context; the value
    is parsed to the type of that default:

    - `int`: an integer literal (`3`, `-2`, `1_000`); `3.5` is an error.
    - `float`: any number (`13`, `1e-3`).
    - `bool`: `true` or `false` (any case).
    - `str`: the text as is.
    - `list` / `tuple` of int, float, bool or str: comma-separated elements,
      each parsed to the type of the default's elements (str when the default
      is empty); an empty value gives an empty list.

    A scoped setting (`a/z=true`, or `/a/b/y=3`: a leading `/` changes nothing)
    sets the key in that scope below `ctx`'s scope, so only that scope and the
    scopes under it see the new value. Spaces around keys and values are
    ignored, and so are empty settings (`"a=1;;b=2;"`). The value is what
    follows the first `=`.

    Args:
        ctx: the context to update.
        settings: the settings string, e.g. the value of a `--set` flag.

    Returns:
        The scoped paths set, in order (e.g. `["/x", "/a/z", "/a/b/y", "/s"]`).

    Raises:
        ValueError: a setting is not `key=value`, its key has no default in
            the root scope, its value does not parse to the default's type,
            or the default's type cannot be parsed. The message names the
            setting. Nothing is set then: all settings are checked first.
        TypeError: `ctx` is not a Context or `settings` not a string.

    Example:
        ctx = ktl.Context()
        ctx.set_param("learning_rate", 0.001)
        ctx.set_param("hidden", 128)
        parse_context_settings(ctx, "learning_rate=0.01;decoder/hidden=64")
        ctx.in_scope("decoder").get_param("hidden")  # 64
    """
    _check_arguments(ctx, settings)
    defaults = ctx.root().params().get(ROOT_SCOPE, {})
    parsed = [
        _parse_setting(ctx, defaults, setting, settings)
        for setting in settings.split(SETTINGS_SEPARATOR)
        if setting.strip()
    ]
    for target, key, value in parsed:
        target.set_param(key, value)
    return [_scoped_path(target, key) for target, key, _ in parsed]


def _check_arguments(ctx: Any, settings: Any) -> None:
    """Raises if `ctx` is not a Context or `settings` not a string."""
    from keras_trainloop.context import Context

    if not isinstance(ctx, Context):
        raise TypeError(
            f"parse_context_settings() expects a ktl.Context. Received: ctx={short_repr(ctx)}. "
            "Fix: pass the trainer's context (trainer.context) or a ktl.Context()."
        )
    if not isinstance(settings, str):
        raise TypeError(
            "parse_context_settings() expects the settings as a string like "
            f'"key=value;scope/key=value". Received: settings={short_repr(settings)}. '
            "Fix: join the settings with ';' into one string."
        )


def _parse_setting(
    ctx: Context,
    defaults: dict[str, Any],
    setting: str,
    settings: str,
) -> tuple[Context, str, Any]:
    """`(scope to set in, key, parsed value)` of one non-empty setting, or raises naming it."""
    scopes, key, text = _split_setting(setting, settings)
    if key not in defaults:
        known = ", ".join(sorted(defaults)) or "none"
        raise ValueError(
            f"Setting {setting!r}: parameter {key!r} has no default value in the root "
            f"scope of the context, so it cannot be set. Received: key={key!r} "
            f"(known parameters: {known}). Fix: check the spelling, or set a default "
            f"first with ctx.set_param({key!r}, default) before parsing the settings."
        )
    value = _parse_value(setting, key, defaults[key], text)
    target = ctx
    for scope in scopes:
        target = target.in_scope(scope)
    return target, key, value


def _split_setting(setting: str, settings: str) -> tuple[list[str], str, str]:
    """The scopes, key and value text of `scope/path/key=value`, or raises."""
    path, sep, text = setting.partition("=")
    path, text = path.strip(), text.strip()
    parts = [part for part in path.split(SCOPE_SEPARATOR) if part]
    if not sep or not parts or path.endswith(SCOPE_SEPARATOR):
        raise ValueError(
            'Each setting must have the format "<param>=<value>" or '
            f'"<scope>/<param>=<value>", settings separated by ";". Received: '
            f"setting={setting!r} in settings={settings!r}. Fix: write e.g. "
            '"learning_rate=0.01;layer_1/dropout=0.1".'
        )
    *scopes, key = parts
    return scopes, key, text


def _parse_value(setting: str, key: str, default: Any, text: str) -> Any:
    """`text` parsed to the type of `default`, or raises naming the setting."""
    parse, kind = _value_parser(default)
    if parse is None:
        raise ValueError(
            f"Setting {setting!r}: the default of parameter {key!r} is a {kind} "
            f"({default!r}), a type that settings cannot parse. Fix: use an int, "
            "float, bool, str or a list of those as the default."
        )
    try:
        return parse(text)
    except (TypeError, ValueError):
        raise ValueError(
            f"Setting {setting!r}: the value of parameter {key!r} must parse as a {kind} "
            f"like its default {default!r}. Received: value={text!r}. Fix: write a {kind} "
            f"value, e.g. {key}={_example(default)}."
        ) from None


def _scoped_path(target: Context, key: str) -> str:
    """The path of `key` in `target`'s scope, e.g. "/a/z"."""
    scope = target.scope
    return (scope if scope.endswith(SCOPE_SEPARATOR) else scope + SCOPE_SEPARATOR) + key


def _example(default: Any) -> str:
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, (list, tuple)):
        return ",".join(_example(x) for x in default)
    return str(default)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_describe(x) for x in value)
    return str(value)


def create_context_settings_flag(
    ctx: Context | Mapping[str, Any], parser: argparse.ArgumentParser, name: str = "set"
) -> argparse.Action:
    """Adds a `--set` option whose help lists the root-scope parameters and defaults.

    As GoMLX's `CreateContextSettingsFlag`: set the defaults in `ctx` first,
    create the flag, parse the arguments, then apply the string with
    `apply_context_settings` (or `parse_context_settings`).

    The defaults may also be given as a dict, the ones the context will
    hold in its root scope: then neither Keras nor JAX is imported, so
    `--help` answers at once; create the context after parsing, set the
    same defaults in it, and apply the flag to it (same rules, same errors).

    Args:
        ctx: the context holding the defaults (its root scope is listed), or
            a mapping of the root-scope defaults.
        parser: the `argparse.ArgumentParser` to add the option to.
        name: the option's name without dashes (`"set"` gives `--set`).

    Returns:
        The `argparse.Action` added; its `dest` names the attribute of the
        parsed namespace (the default value is `""`).

    Raises:
        TypeError: `parser` is not an ArgumentParser or `name` not a string.

    Example:
        defaults = {"learning_rate": 1e-3, "hidden": 128}
        parser = argparse.ArgumentParser()
        flag = create_context_settings_flag(defaults, parser)
        args = parser.parse_args()  # --help answers here, before Keras loads
        ctx = ktl.Context()
        for key, value in defaults.items():
            ctx.set_param(key, value)
        apply_context_settings(ctx, args, flag)
    """
    if not isinstance(parser, argparse.ArgumentParser):
        raise TypeError(
            "create_context_settings_flag() expects an argparse.ArgumentParser. "
            f"Received: parser={short_repr(parser)}. Fix: pass argparse.ArgumentParser()."
        )
    if not isinstance(name, str) or not name.strip("-"):
        raise TypeError(
            f"create_context_settings_flag() expects a flag name like 'set'. Received: "
            f"name={name!r}. Fix: pass a non-empty string, e.g. name='set'."
        )
    if isinstance(ctx, Mapping):
        defaults = dict(ctx)
    else:
        defaults = ctx.root().params().get(ROOT_SCOPE, {})
    listed = "; ".join(f"{key}={_describe(value)}" for key, value in defaults.items())
    help_text = (
        'Set context parameters defining the model: a list of "param=value" separated by ";". '
        f'Scoped settings are allowed, using "{SCOPE_SEPARATOR}" to separate scopes '
        '(e.g. "layer_1/dropout=0.1"). Parameters that can be set, with their defaults: '
        + (listed or "none")
        + "."
    )
    return parser.add_argument(
        "--" + name.lstrip("-"),
        default="",
        metavar='"PARAM=VALUE;..."',
        help=help_text.replace("%", "%%"),
    )


def apply_context_settings(
    ctx: Context, args: argparse.Namespace, flag: argparse.Action | str = "set"
) -> list[str]:
    """Applies the settings parsed by the flag from `create_context_settings_flag`.

    Args:
        ctx: the context to update.
        args: the namespace returned by `parser.parse_args()`.
        flag: the action returned by `create_context_settings_flag`, or the
            flag's name (`"set"`).

    Returns:
        The scoped paths set (see `parse_context_settings`).

    Raises:
        ValueError: a bad setting (see `parse_context_settings`); a CLI may
            pass the message to `parser.error()`.
        AttributeError: `args` has no value for the flag.
    """
    dest = flag.dest if isinstance(flag, argparse.Action) else flag.lstrip("-").replace("-", "_")
    if not hasattr(args, dest):
        raise AttributeError(
            f"The parsed arguments have no {dest!r} attribute. Received: flag={flag!r}. Fix: "
            "pass the action returned by create_context_settings_flag()."
        )
    return parse_context_settings(ctx, getattr(args, dest) or "")
