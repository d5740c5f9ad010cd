"""parse_context_settings with GoMLX's rules, and its argparse flag."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import keras_trainloop as ktl
from keras_trainloop.commandline import (
    apply_context_settings,
    create_context_settings_flag,
    parse_context_settings,
)


@pytest.fixture
def ctx():
    # GoMLX's commandline_test.go defaults.
    ctx = ktl.Context()
    ctx.set_param("x", 11.0)
    ctx.set_param("y", 7)
    ctx.set_param("z", False)
    ctx.set_param("s", "foo")
    return ctx


def test_gomlx_example_sets_root_and_scoped_values(ctx):
    paths = parse_context_settings(ctx, "x=13;a/z=true;/a/b/y=3;s=bar")

    assert paths == ["/x", "/a/z", "/a/b/y", "/s"]
    assert ctx.get_param("x") == 13.0 and isinstance(ctx.get_param("x"), float)
    assert ctx.get_param("y") == 7
    assert ctx.in_scope("a").get_param("y") == 7
    assert ctx.in_scope("a").in_scope("b").get_param("y") == 3
    assert ctx.get_param("z") is False
    assert ctx.in_scope("a").get_param("z") is True
    assert ctx.get_param("s") == "bar"


@pytest.mark.parametrize(
    "default, text, expected",
    [
        (7, "1_000", 1000),
        (7, "-2", -2),
        (0.5, "1e-3", 1e-3),
        (True, "FALSE", False),
        ("a", "b=c", "b=c"),
        ([1, 2], "3, 4,5", [3, 4, 5]),
        ((0.1, 0.2), "1,2.5", (1.0, 2.5)),
        (["a"], "x,y", ["x", "y"]),
        ([], "x", ["x"]),
        ([1, 2.5], "3,4", [3.0, 4.0]),
        ([1], "", []),
    ],
    ids=[
        "int-underscores",
        "negative-int",
        "float-exponent",
        "bool-any-case",
        "str-with-equals",
        "int-list",
        "float-tuple",
        "str-list",
        "empty-list-is-str",
        "mixed-numbers",
        "empty",
    ],
)
def test_values_parse_to_the_default_type(default, text, expected):
    ctx = ktl.Context().set_param("p", default)
    parse_context_settings(ctx, f"p={text}")
    value = ctx.get_param("p")
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(value, (list, tuple)):
        assert [type(v) for v in value] == [type(v) for v in expected]


def test_spaces_and_empty_settings_are_ignored(ctx):
    parse_context_settings(ctx, " y = 3 ;; s= bar ;")
    assert ctx.get_param("y") == 3
    assert ctx.get_param("s") == "bar"


@pytest.mark.parametrize(
    "settings, match",
    [
        ("q=3", r"'q=3'.*parameter 'q' has no default value in the root scope.*ctx.set_param"),
        ("y=3.14", r"'y=3.14'.*must parse as a int like its default 7.*value='3.14'"),
        ("x=abc", r"'x=abc'.*must parse as a float"),
        ("z=yes", r"'z=yes'.*must parse as a bool.*z=false"),
        ("x13", r'format "<param>=<value>".*setting=\'x13\''),
        ("=3", r"format.*setting='=3'"),
        ("a/=3", r"format.*setting='a/=3'"),
    ],
    ids=[
        "unknown-key",
        "float-for-int",
        "text-for-float",
        "bad-bool",
        "no-equals",
        "no-key",
        "scope-without-key",
    ],
)
def test_bad_settings_raise_naming_the_setting(ctx, settings, match):
    with pytest.raises(ValueError, match=match):
        parse_context_settings(ctx, settings)


def test_key_known_only_in_a_sub_scope_is_unknown(ctx):
    ctx.in_scope("c").set_param("q", 13)
    with pytest.raises(ValueError, match="'q' has no default value in the root scope"):
        parse_context_settings(ctx, "q=3")
    with pytest.raises(ValueError, match="'q' has no default value in the root scope"):
        parse_context_settings(ctx, "c/q=3")


def test_a_bad_setting_leaves_every_value_unchanged(ctx):
    with pytest.raises(ValueError, match="y=oops"):
        parse_context_settings(ctx, "x=14;y=oops")
    assert ctx.get_param("x") == 11.0


def test_defaults_of_unparseable_types_are_reported():
    ctx = ktl.Context().set_param("d", {"a": 1}).set_param("m", [1, "a"])
    with pytest.raises(ValueError, match="default of parameter 'd' is a dict"):
        parse_context_settings(ctx, "d=1")
    with pytest.raises(ValueError, match="default of parameter 'm' is a list of int and str"):
        parse_context_settings(ctx, "m=1")


def test_settings_must_be_a_string(ctx):
    with pytest.raises(TypeError, match="settings as a string"):
        parse_context_settings(ctx, ["x=1"])


def test_flag_help_lists_root_parameters_and_defaults(ctx):
    ctx.in_scope("a").set_param("hidden_only_in_a", 3)
    parser = argparse.ArgumentParser(prog="train")
    action = create_context_settings_flag(ctx, parser)
    help_text = " ".join(parser.format_help().split())  # argparse rewraps lines

    assert action.option_strings == ["--set"] and action.default == ""
    assert "x=11.0; y=7; z=false; s=foo" in help_text
    assert "hidden_only_in_a" not in help_text
    assert 'separated by ";"' in help_text


def test_flag_value_is_applied_to_the_context(ctx):
    parser = argparse.ArgumentParser()
    action = create_context_settings_flag(ctx, parser, name="hparams")
    args = parser.parse_args(["--hparams", "y=3;a/s=baz"])

    assert apply_context_settings(ctx, args, action) == ["/y", "/a/s"]
    assert ctx.get_param("y") == 3
    assert ctx.in_scope("a").get_param("s") == "baz"
    assert apply_context_settings(ctx, parser.parse_args([]), "hparams") == []


def test_applying_an_unknown_flag_says_how_to_fix_it(ctx):
    with pytest.raises(AttributeError, match="no 'set' attribute"):
        apply_context_settings(ctx, argparse.Namespace(other=""), "set")


def test_flag_from_a_dict_of_defaults_is_the_flag_from_the_context(ctx):
    defaults = {"x": 11.0, "y": 7, "z": False, "s": "foo"}
    from_ctx, from_dict = argparse.ArgumentParser(prog="t"), argparse.ArgumentParser(prog="t")
    create_context_settings_flag(ctx, from_ctx)
    action = create_context_settings_flag(defaults, from_dict)
    assert from_dict.format_help() == from_ctx.format_help()

    args = from_dict.parse_args(["--set", "y=3;a/z=true"])
    assert apply_context_settings(ctx, args, action) == ["/y", "/a/z"]
    with pytest.raises(ValueError, match="'y' must parse as a int"):  # the same errors
        apply_context_settings(ctx, from_dict.parse_args(["--set", "y=1.5"]), action)


def test_the_flag_is_created_without_importing_keras_or_jax():
    code = (
        "import argparse, sys\n"
        "from keras_trainloop.commandline import create_context_settings_flag\n"
        "create_context_settings_flag({'lr': 0.1}, argparse.ArgumentParser())\n"
        "print([m for m in ('keras', 'jax', 'numpy') if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_scope_constants_match_the_contexts():
    from keras_trainloop import context
    from keras_trainloop.commandline import _settings

    assert (_settings.SCOPE_SEPARATOR, _settings.ROOT_SCOPE) == (
        context.SCOPE_SEPARATOR,
        context.ROOT_SCOPE,
    )
