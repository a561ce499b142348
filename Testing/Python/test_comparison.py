"""Comparing two designs' held-out figures case by case (``evaluation.comparison``, ``braintumorseg compare``)."""
import json
import os

import pytest
from conftest import cli_main, one_line_error

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.evaluation.comparison import compare, mean_intervals
from BrainTumorSegLib.evaluation.cross_validation import GRADES
from BrainTumorSegLib.models import bundles

CASES = sorted(GRADES)
CYST = "BraTS2021_01484"  # no enhancing tumor in its reference


def table(wt=0.8, tc=0.7, et=0.6, **per_case):
    """Every shared case with the given Dice; per_case: case id -> (WT, TC, ET) for some."""
    rows = {}
    for c in CASES:
        w, t, e = per_case.get(c, (wt, tc, et))
        rows[c] = {"WT": {"dice": w}, "TC": {"dice": t}, "ET": {"dice": e}}
    return rows


def test_a_uniform_gain_is_counted_on_every_case_and_in_every_grade():
    r = compare(table(), table(wt=0.85))
    wt = r["groups"]["all"]["WT"]
    assert wt["n"] == 32 and wt["difference"] == pytest.approx(0.05)
    assert wt["interval"] == pytest.approx([0.05, 0.05]) and (wt["better"], wt["worse"]) == (32, 0)
    assert r["groups"]["all"]["TC"]["difference"] == 0 and r["groups"]["all"]["TC"]["better"] == 0
    assert r["groups"]["all"]["mean"]["difference"] == pytest.approx(0.05 / 3)
    assert {g: r["groups"][g]["WT"]["n"] for g in r["groups"]} == {"all": 32, "HGG": 24, "low-grade": 6, "little-ET": 2}


def test_one_case_that_decides_is_named_and_the_interval_spans_zero():
    # B a little better on 31 cases' ET and loses one case's ET altogether (a spot where there is none)
    b = table(et=0.602, **{CYST: (0.8, 0.7, 0.0)})
    a = table(**{CYST: (0.8, 0.7, 1.0)})
    et = compare(a, b)["groups"]["all"]["ET"]
    assert et["difference"] == pytest.approx((31 * 0.002 - 1.0) / 32)
    assert et["interval"][0] < 0 < et["interval"][1]
    assert (et["better"], et["worse"]) == (0, 1)  # +0.002 is within the tie
    assert et["decided_by"]["case"] == CYST and et["decided_by"]["its_difference"] == pytest.approx(-1.0)
    assert et["decided_by"]["difference_without_it"] == pytest.approx(0.002)
    low = compare(a, b)["groups"]["low-grade"]["ET"]
    assert low["n"] == 6 and low["decided_by"]["case"] == CYST


def test_the_interval_is_reproducible_and_follows_the_seed():
    a, b = table(), table(et=0.6, **{c: (0.8, 0.7, 0.6 + 0.01 * i) for i, c in enumerate(CASES)})
    assert compare(a, b, seed=3) == compare(a, b, seed=3)
    assert compare(a, b, seed=3)["groups"]["all"]["ET"]["interval"] != compare(a, b, seed=4)["groups"]["all"]["ET"]["interval"]


def test_only_the_cases_both_hold_are_compared_and_the_others_named():
    a = {c: v for c, v in table().items() if c != CYST}
    b = {c: v for c, v in table().items() if c != "Brats18_2013_2_1"}
    r = compare(a, b)
    assert len(r["cases"]) == 30 and r["only_in_a"] == ["Brats18_2013_2_1"] and r["only_in_b"] == [CYST]
    with pytest.raises(InputError, match="no case in common"):
        compare({CASES[0]: a[CASES[0]]}, {CASES[1]: a[CASES[1]]})


def test_cli_compares_a_shipped_model_with_a_report_and_writes_json(tmp_path):
    # the default's manifest carries its design's pooled out-of-fold table; a report holding the same
    # table with one case's ET lost must show exactly that case's loss
    manifest = os.path.join(bundles.resolve("brats-glioma-v9-all"), "manifest.json")
    shipped = json.load(open(manifest))["metrics"]["out_of_fold_postprocessed"]["per_case"]
    changed = json.loads(json.dumps(shipped))
    lost = next(c for c in changed if changed[c]["ET"]["dice"] > 0.5)
    changed[lost]["ET"]["dice"] = 0.0
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"per_case": changed}))
    out = tmp_path / "cmp.json"
    r = cli_main("compare", "brats-glioma-v9-all", str(report), "--json", str(out), "--resamples", "500")
    assert r.returncode == 0, r.stderr
    assert f"without {lost}" in r.stdout and "all (32 cases)" in r.stdout
    assert "brats-glioma-v9-all's figures are those of its design's fold models" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["a"] == "brats-glioma-v9-all" and doc["resamples"] == 500
    et = doc["groups"]["all"]["ET"]
    assert et["difference"] == pytest.approx(-shipped[lost]["ET"]["dice"] / 32) and et["worse"] == 1
    assert doc["groups"]["all"]["WT"]["difference"] == 0


def test_one_table_gets_its_means_with_intervals_that_widen_with_the_spread():
    spread = table(**{c: (0.8, 0.2 + 0.02 * i, 0.6) for i, c in enumerate(CASES)})
    r = mean_intervals(spread)
    tc, wt = r["groups"]["all"]["TC"], r["groups"]["all"]["WT"]
    assert tc["mean"] == pytest.approx(0.2 + 0.02 * 15.5) and tc["interval"][0] < tc["mean"] < tc["interval"][1]
    assert wt["interval"] == pytest.approx([0.8, 0.8])  # every case alike: nothing to resample
    low = r["groups"]["low-grade"]["TC"]
    assert low["n"] == 6 and low["interval"][1] - low["interval"][0] > 0
    assert r["groups"]["little-ET"]["TC"]["n"] == 2 and r["groups"]["little-ET"]["TC"]["interval"] is None
    with pytest.raises(InputError, match="holds no case"):
        mean_intervals({})


def test_cli_with_one_model_prints_its_means_and_whose_they_are(tmp_path):
    out = tmp_path / "v9.json"
    r = cli_main("compare", "brats-glioma-v9-all", "--json", str(out), "--resamples", "200")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("brats-glioma-v9-all: mean Dice of 32 held-out cases (by its design's fold models)")
    doc = json.loads(out.read_text())
    assert "b" not in doc and doc["held_out_by"] == ["its design's fold models"]
    low, tc = doc["groups"]["low-grade"]["TC"], doc["groups"]["all"]["TC"]
    assert low["n"] == 6 and low["interval"][0] < low["mean"] < low["interval"][1]
    assert tc["interval"][1] - tc["interval"][0] < low["interval"][1] - low["interval"][0]  # 32 cases against 6


def bad_row(dice):
    return {"per_case": {CYST: {"WT": {"dice": 0.9}, "TC": {"dice": 0.8}, "ET": {"dice": dice}}}}


@pytest.mark.parametrize("content, problem", [
    ({"metrics": {}}, "holds no per-case figures"),
    ([1, 2], "holds no per-case figures"),
    ({"per_case": {CYST: {"WT": {"dice": 0.9}, "TC": {"dice": 0.8}}}}, f"case {CYST} lacks a Dice from 0 to 1"),
    (bad_row(True), f"case {CYST} lacks a Dice"),
    (bad_row(1.5), f"case {CYST} lacks a Dice"),
    ('{"per_case": {"%s": {"WT": {"dice": 0.9}, "TC": {"dice": 0.8}, "ET": {"dice": NaN}}}}' % CYST,
     f"case {CYST} lacks a Dice"),
    ("{not json", "is not valid JSON"),
])
def test_cli_refuses_a_table_it_cannot_read_in_one_line(tmp_path, content, problem):
    bad = tmp_path / "bad.json"
    bad.write_text(content if isinstance(content, str) else json.dumps(content))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"per_case": table()}))
    out = tmp_path / "out.json"
    one_line_error(cli_main("compare", str(good), str(bad), "--json", str(out)), str(bad), problem)
    one_line_error(cli_main("compare", str(good), "no-such-model"), "no-such-model", "no such model")
    one_line_error(cli_main("compare", str(good), str(good), "--resamples", "10"), "--resamples")
    one_line_error(cli_main("compare", str(good), "--resamples", "100000000"), "--resamples")
    one_line_error(cli_main("compare", str(good), "--seed", "-1"), "--seed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "good.json"]  # nothing written


def test_cli_names_both_tables_when_they_share_no_case(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"per_case": {c: v for c, v in table().items() if c == CYST}}))
    b.write_text(json.dumps({"per_case": {c: v for c, v in table().items() if c != CYST}}))
    one_line_error(cli_main("compare", str(a), str(b)), str(a), str(b), "no case in common")
