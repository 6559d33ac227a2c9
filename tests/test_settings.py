"""One description per training setting (core.train.config): every TrainConfig field has its words, and
the command line, the Train page, the Runs page and the README's settings table are written from them."""
from __future__ import annotations

import argparse
import re
from dataclasses import fields

import pytest

from core.base.errors import BadInput
from core.cli import build_parser
from core.train.config import TrainConfig, setting, setting_words, settings, settings_table

from helpers import ROOT, open_page, run_cli

START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def train_flags() -> dict[str, argparse.Action]:
    """`graft train`'s arguments by the TrainConfig field they fill."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in commands.choices["train"]._actions}


def test_every_field_has_a_label_and_one_plain_help_sentence():
    assert [s.name for s in settings()] == [f.name for f in fields(TrainConfig)]  # all of them, in field order
    labels = [s.label for s in settings()]
    assert len(set(labels)) == len(labels)  # no two settings called the same
    for s in settings():
        assert s.label and s.label == s.label.strip() and s.label[0].islower(), s.name
        assert s.title[0].isupper() and s.title[1:] == s.label[1:]
        assert len(s.help.split()) >= 5 and s.help[0].isupper() and s.help.endswith("."), s.name
        assert "\n" not in s.help and not re.search(r"\.\s+[A-Z]", s.help), s.name  # one sentence
        assert set(s.options) <= set(s.choices), s.name  # words only for choices it has


def test_every_field_is_a_train_flag_with_its_help_choices_and_type():
    flags = train_flags()
    for s in settings():
        action = flags[s.name]
        assert s.help in action.help.replace("%%", "%"), s.name
        assert tuple(action.choices or ()) == s.choices, s.name
        assert action.default is None, s.name  # only the flags given override a --config file
        if s.required:
            assert not action.option_strings and action.metavar == "DATA"
        else:
            assert action.option_strings == [s.flag], s.name
        for choice in s.choices:
            assert f"{choice}: {s.option(choice)}" in action.help, (s.name, choice)
    assert [s.flag for s in settings() if s.kind is bool] == ["--no-cache"]


def example(s):
    """A value the setting accepts other than its default, as typed and as parsed."""
    if s.kind is bool:
        return [], not s.default
    if s.choices:
        return [s.choices[-1]], s.choices[-1]
    if s.count:
        return ["0.6", "0.25", "0.15"], [0.6, 0.25, 0.15]
    if s.kind is str:
        return ["some value"], "some value"
    low, high = s.between or (0, 100)
    value = s.kind(high) if s.kind is int else float(high)  # the edge of the range is accepted too
    return [str(value)], value


def test_each_flag_parses_to_its_field_and_a_flag_not_given_overrides_nothing(tmp_path):
    argv = ["train", str(tmp_path)]
    expected = {"data": str(tmp_path)}
    for s in settings():
        if not s.required:
            typed, expected[s.name] = example(s)
            argv += [s.flag, *typed]
    args = build_parser().parse_args(argv)
    for s in settings():
        assert getattr(args, s.name) == expected[s.name], s.name
        assert type(getattr(args, s.name)) is type(expected[s.name]), s.name
    bare = build_parser().parse_args(["train", str(tmp_path)])
    assert all(getattr(bare, s.name) is None for s in settings() if not s.required)
    # the existing spellings the tests and the README use
    old = build_parser().parse_args(["train", "D", "--epochs", "2", "--freeze", "partial", "--no-cache",
                                     "--time-limit", "60", "--batch-size", "8", "--input-size", "64"])
    assert (old.epochs, old.freeze, old.cache, old.time_limit, old.batch_size, old.input_size) == \
        (2, "partial", False, 60.0, 8, 64)


def test_train_help_lists_every_flag_with_its_sentence():
    result = run_cli("train", "--help")
    assert result.returncode == 0, result.stderr
    text = "".join(result.stdout.split())  # argparse wraps the lines (at hyphens too)
    for s in settings():
        assert s.flag in text and "".join(s.help.split()) in text, s.name


def test_validation_uses_the_described_choices_and_ranges(tmp_path):
    for s in settings():
        if s.choices:
            with pytest.raises(BadInput, match=f"{s.name} must be one of {', '.join(s.choices)}"):
                TrainConfig(data=str(tmp_path), **{s.name: "nonsense"})
        if s.between:
            low, high = s.between
            beyond = high + 1 if s.kind is int else high * 2
            with pytest.raises(BadInput, match=f"{s.name.replace('_', '-')} must be between {low} and {high}"):
                TrainConfig(data=str(tmp_path), **{s.name: beyond})
    assert TrainConfig(data=str(tmp_path), lr=None, time_limit=None).lr is None  # None: the automatic value


def test_runs_page_words_come_from_the_description():
    assert setting_words("freeze", "head") == ("what trains", "head only")
    assert setting_words("backbone", "efficientnet_lite0") == ("model", "Lite0")
    assert setting_words("lr", None) == ("learning rate", "automatic")
    assert setting_words("time_limit", 900.0) == ("time limit", "15 min")
    assert setting_words("cache", False) == ("cache", "off")
    assert setting_words("fractions", [0.7, 0.15, 0.15]) == ("train / validation / test shares", "70% / 15% / 15%")
    assert setting_words("an_old_key", None) == ("an_old_key", "default")  # an older run's config
    for s in settings():
        assert setting_words(s.name, s.default)[0] == s.label


def test_the_readme_settings_table_is_current():
    readme = (ROOT / "README.md").read_text()
    found = re.search(re.escape(START) + r"\n(.*?)\n?" + re.escape(END), readme, re.S)
    assert found, f"README.md has no {START} … {END} section for the settings table"
    assert found.group(1).strip() == settings_table().strip(), \
        "README.md's settings table is out of date: paste in the output of `python -m core.train.config`"


def test_the_settings_table_has_a_row_a_setting():
    rows = settings_table().splitlines()
    assert rows[0] == "| flag | what it is | default | choices |" and len(rows) == 2 + len(settings())
    for s, row in zip(settings(), rows[2:]):
        assert row.startswith(f"| `{s.flag}") and s.help.replace("|", "\\|") in row, s.name
        assert row.count(" | ") == 3, row  # no stray | breaks a row
    assert "| `--freeze {head,partial,full}` | **what trains**: " in settings_table()
    assert "`head`: only the last layer (fastest)" in settings_table()


def test_the_train_page_shows_the_descriptions(elpv_small, tmp_path):
    at = open_page("pages/train.py", str(elpv_small), str(tmp_path / "runs"))
    assert not at.exception, at.exception
    widgets = {"freeze": at.selectbox(key="tr_freeze"), "features": at.selectbox(key="tr_features"),
               "class_weights": at.selectbox(key="tr_class_weights"), "epochs": at.number_input(key="tr_epochs"),
               "patience": at.number_input(key="tr_patience"), "lr": at.number_input(key="tr_lr"),
               "time_limit": at.selectbox(key="tr_minutes"), "name": at.text_input(key="tr_name")}
    for name, widget in widgets.items():
        assert widget.label == setting(name).title and widget.help == setting(name).help, name
    for name in ("freeze", "features", "class_weights"):
        assert widget_options(widgets[name]) == [setting(name).option(c) for c in setting(name).choices]
    assert widgets["epochs"].value == setting("epochs").default and widgets["patience"].value == 5
    assert widgets["lr"].value is None  # empty: automatic
    assert widgets["freeze"].value == "head"


def widget_options(selectbox) -> list[str]:
    return list(selectbox.options)
