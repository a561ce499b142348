"""The options of ``segment``, declared once (``segment_options``): every bad value comes from the
declaration itself and is refused in one line, by the API and by the command line, before anything
heavy is imported; the command line and the options round-trip."""
import math
import os

import pytest
from conftest import cli_in_a_fresh_process, cli_main, one_line_error, usage_error
from hypothesis import given, settings
from hypothesis import strategies as st

from BrainTumorSegLib import labels
from BrainTumorSegLib.cli.main import build_parser
from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.predict import backends
from BrainTumorSegLib.segment_options import CONTRADICTIONS, SegmentOptions, Spec, defaults, flag, help_text, specs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "Resources", "Samples", "Brats18_TCIA01_231_1")
WRONG_TYPE = {"flag": "yes", "switch": 1, "int": 2.5, "float": "0.5", "choice": 3, "spacing": "2mm", "device": 0}


def out_of_range(spec: Spec) -> list:
    """Values just below and above a numeric option's range, and what no range holds."""
    if spec.low is None or spec.high is None:
        return []
    if spec.kind == "int":
        return [int(spec.low) - 1, int(spec.high) + 1]
    return [spec.low - 0.01, spec.high + 0.01, math.nan, math.inf]


def bad_values() -> list:
    """(option, value) pairs the declaration rules out: for every option a value of the wrong type,
    for numeric ones values below and above the range, for the rest a value among no choices."""
    pairs = []
    for name, spec in specs().items():
        pairs.append((name, WRONG_TYPE[spec.kind]))
        pairs += [(name, v) for v in out_of_range(spec)]
        pairs += [(name, v) for v in {"choice": ["nonsense"], "device": ["gpu", "cuda:x", "CUDA"], "spacing": ["1mm"],
                                      "flag": [0], "switch": ["true"]}.get(spec.kind, [])]
        if not spec.nullable:
            pairs.append((name, None))
    return pairs


def test_the_bad_values_cover_every_option_and_every_range():
    names = [n for n, _ in bad_values()]
    for name, spec in specs().items():
        assert names.count(name) >= (3 if spec.low is not None else 2), name
    assert {s.kind for s in specs().values()} <= set(WRONG_TYPE)


@pytest.mark.parametrize("name,value", bad_values(), ids=repr)
def test_the_options_refuse_a_bad_value_naming_option_value_and_what_is_allowed(name, value):
    with pytest.raises(InputError) as exc:
        SegmentOptions(**{name: value})
    text = str(exc.value)
    assert text.startswith(flag(name) + ": ") and repr(value) in text and specs()[name].allowed() in text
    assert "\n" not in text


def command_line_bad_values() -> tuple:
    """The bad values a command line can carry, as text, split by who refuses them: the options'
    own check (what the argument's type reads), or argparse (its type or choices refuse the text).
    Decided by the parser itself; values whose text reads as a valid value are left out."""
    ours, argparse_s = [], []
    for name, value in bad_values():
        spec = specs()[name]
        if value is None or spec.output or spec.kind in ("flag", "switch"):
            continue  # flags carry no value
        argv = ["segment", "--case", "C", "-o", "o.nii.gz", flag(name), str(value)]
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            argparse_s.append((name, str(value)))
            continue
        try:
            SegmentOptions.from_args(args)
        except InputError:
            ours.append((name, str(value)))
    return ours, argparse_s


def test_every_bad_value_on_the_command_line_is_one_line_before_anything_heavy_loads(tmp_path):
    """All of them through ``cli.main`` in one fresh process: exit 2, one line naming the option
    (argparse's usage line before it where argparse refuses), nothing written, and neither torch
    nor safetensors imported, so no weights were read."""
    ours, theirs = command_line_bad_values()
    assert {n for n, _ in ours} >= {n for n, s in specs().items() if s.low is not None}
    out = tmp_path / "labels.nii.gz"
    base = ["segment", "--case", SAMPLE, "-o", str(out), "--report", str(tmp_path / "r.json")]
    contradictions = [[a for k, v in c.example.items() for a in (flag(k), str(v))] for c in CONTRADICTIONS]
    runs, heavy = cli_in_a_fresh_process([base + [flag(n), t] for n, t in ours + theirs] + [base + c for c in contradictions])
    for (name, text), r in zip(ours, runs):
        one_line_error(r, flag(name), text, specs()[name].allowed())
    for (name, text), r in zip(theirs, runs[len(ours):]):
        usage_error(r, f"argument {flag(name)}", repr(text))
    for c, r in zip(CONTRADICTIONS, runs[len(ours) + len(theirs):]):
        one_line_error(r, flag(c.option), c.problem)
    assert heavy == [] and os.listdir(tmp_path) == []


@pytest.mark.parametrize("c", CONTRADICTIONS, ids=lambda c: c.option + ":" + ",".join(c.example))
def test_contradicting_options_are_refused_naming_the_option_and_what_to_do(c):
    with pytest.raises(InputError, match=f"^{flag(c.option)}: ") as exc:
        SegmentOptions(**c.example)
    assert c.problem in str(exc.value)
    SegmentOptions(**{k: v for k, v in c.example.items() if k != c.option})  # each alone is fine


def value_strategy(spec: Spec) -> st.SearchStrategy:
    """Valid values of one option, from its declaration."""
    if spec.kind == "flag":
        values = st.booleans()
    elif spec.kind == "switch":
        values = st.booleans()
    elif spec.kind == "int":
        values = st.integers(int(spec.low), int(spec.high))
    elif spec.kind == "float":
        values = st.floats(spec.low, spec.high, allow_nan=False)
    elif spec.kind == "choice":
        values = st.sampled_from(spec.choices)
    elif spec.kind == "spacing":
        values = st.sampled_from(["auto", "off"]) | st.floats(spec.low, spec.high, allow_nan=False)
    else:
        values = st.sampled_from(["auto", "cpu", "mps", "cuda"]) | st.integers(0, 15).map(lambda i: f"cuda:{i}")
    return st.none() | values if spec.nullable else values


def _valid(values: dict) -> bool:
    try:
        SegmentOptions(**values)
    except InputError:
        return False
    return True


valid_options = st.fixed_dictionaries({n: value_strategy(s) for n, s in specs().items()}).filter(_valid).map(
    lambda v: SegmentOptions(**v))
PATHS = {n: f"{n}.nrrd" for n, s in specs().items() if s.output}


@settings(max_examples=300, deadline=None)
@given(valid_options)
def test_options_round_trip_through_the_command_line(opts):
    """What the Slicer module does: options to arguments, which the command line reads back as the same options."""
    args = build_parser().parse_args(["segment", "--case", "C", "-o", "o.nii.gz", *opts.to_argv(PATHS)])
    assert SegmentOptions.from_args(args) == opts
    for name in PATHS:
        assert getattr(args, name) == (PATHS[name] if getattr(opts, name) else None)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_number_outside_a_range_is_refused(data):
    name = data.draw(st.sampled_from([n for n, s in specs().items() if s.low is not None]))
    spec = specs()[name]
    number = st.integers() if spec.kind == "int" else st.floats(allow_nan=True, allow_infinity=True)
    value = data.draw(number.filter(lambda v: not spec.low <= v <= spec.high))
    with pytest.raises(InputError, match=f"^{flag(name)}: "):
        SegmentOptions(**{name: value})


def test_defaults_give_no_arguments_and_every_option_is_in_the_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # argparse wraps at the terminal's width
    assert SegmentOptions().to_argv() == [] and SegmentOptions() == SegmentOptions.from_args(
        build_parser().parse_args(["segment", "--case", "C", "-o", "o.nii.gz"]))
    r = cli_main("segment", "--help")
    text = " ".join(r.stdout.split())
    for name, spec in specs().items():
        assert flag(name) in text
        if not spec.output:
            assert " ".join(help_text(name).split()) in text, name
    assert "None" not in text  # the model's own is said in words


def test_an_output_option_needs_its_path():
    with pytest.raises(ValueError, match="uncertainty is on"):
        SegmentOptions(uncertainty=True).to_argv()


def test_choices_are_the_library_s_own():
    assert specs()["label_scheme"].choices == tuple(labels.SCHEMES)
    assert specs()["backend"].choices == backends.BACKENDS
    assert defaults()["min_et_voxels"] is None  # the model's own: the manifest's postprocessing


def test_postprocessing_is_the_model_s_unless_an_option_says_otherwise():
    model = {"min_et_voxels": 0, "min_component_voxels": 1000, "fill_core_holes": False}
    assert SegmentOptions().postprocessing(model) == model
    assert SegmentOptions(min_et_voxels=200, fill_core_holes=True).postprocessing(model) == {
        "min_et_voxels": 200, "min_component_voxels": 1000, "fill_core_holes": True}
