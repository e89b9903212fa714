"""Where a PRM's scores are cut: the fitted center, its file, and `redline verifier calibrate` on a tiny
Math-Shepherd model built here (the same one the hf-prm tests use)."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from hypothesis import given, strategies as st
from typer.testing import CliRunner

from redline.cli import app
from redline.errors import RedlineError
from redline.verifiers.calibration import CALIBRATION_FILE, Cut, cut_at, fit_center, read_center, recenter, \
    write_cut

pytest.importorskip("torch")

from tests.test_verifier_hf_prm import QUESTION, STEPS, math_shepherd_dir  # noqa: E402,F401
from tests.conftest import scripted_runtime  # noqa: E402

probability = st.floats(min_value=0.001, max_value=0.999)


@given(probability, probability, probability)
def test_recenter_maps_the_center_to_half_and_keeps_order(a, b, center):
    assert recenter(center, center) == pytest.approx(0.5)
    if a < b:
        assert recenter(a, center) <= recenter(b, center)
    assert (recenter(a, center) < 0.5) == (a < center) or abs(a - center) < 1e-9


def test_the_fitted_cut_separates_what_raw_half_does_not():
    # right steps score 0.3-0.45, wrong ones 0.1-0.2: at 0.5 every right solution is flagged
    scores = [[0.4, 0.45], [0.35, 0.3], [0.42, 0.15], [0.1, 0.4], [0.38, 0.2]]
    labels = [-1, -1, 1, 0, 1]
    raw = cut_at(scores, labels, 0.5)
    assert raw.correct_accuracy == 0 and raw.error_accuracy == pytest.approx(1 / 3)
    cut = fit_center(scores, labels)
    assert 0.2 < cut.center <= 0.3 and cut.f1 == 1.0 and cut.solutions == 5
    with pytest.raises(RedlineError, match="with an error and solutions without"):
        fit_center([[0.4]], [-1])


def test_the_file_round_trips_and_a_broken_one_is_an_error(tmp_path):
    assert read_center(tmp_path) is None
    write_cut(tmp_path, Cut(0.27, 0.8, 0.7, 0.9, 40), "40 solutions")
    assert read_center(tmp_path) == 0.27
    assert json.loads((tmp_path / CALIBRATION_FILE).read_text())["fitted_on"] == "40 solutions"
    (tmp_path / CALIBRATION_FILE).write_text('{"centre": 0.3}')
    with pytest.raises(RedlineError, match="not a calibration file"):
        read_center(tmp_path)
    (tmp_path / CALIBRATION_FILE).write_text('{"center": 1.5}')
    with pytest.raises(RedlineError, match="not in"):
        read_center(tmp_path)


def labelled(tmp_path, rows):
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps({"question": QUESTION, "steps": steps, "label": label}) + "\n"
                            for steps, label in rows))
    return path


def scores(spec: str, steps: list[str]) -> list[float]:
    """One solution's scores from a fresh verifier (the CLI runs its own event loop, so this test has none)."""
    return asyncio.run(scripted_runtime(["unused"]).verifier(spec).score(QUESTION, steps))


def test_calibrate_writes_the_cut_that_hf_prm_and_the_export_then_use(math_shepherd_dir, tmp_path):  # noqa: F811
    prm = tmp_path / "prm"
    shutil.copytree(math_shepherd_dir, prm)
    wrong = [STEPS[0], "step 2 : 6 + 6 = 4", "the answer is 4 ."]
    raw, raw_wrong = scores(f"hf-prm:{prm}", STEPS), scores(f"hf-prm:{prm}", wrong)
    data = labelled(tmp_path, [(STEPS, -1)] * 3 + [(wrong, 1)] * 3)
    run = CliRunner().invoke(app, ["verifier", "calibrate", str(prm), "--data", str(data)])
    assert run.exit_code == 0, run.output
    assert "cut at raw 0.5: ProcessBench F1" in run.output and "cut at fitted" in run.output
    center = read_center(prm)
    assert center is not None and 0 < center < 1
    fitted = json.loads((prm / CALIBRATION_FILE).read_text())
    at_half = cut_at([raw] * 3 + [raw_wrong] * 3, [-1] * 3 + [1] * 3, 0.5)
    assert fitted["solutions"] == 6 and fitted["f1"] >= at_half.f1 - 1e-6  # 0.5 is one of the cuts tried
    assert scores(f"hf-prm:{prm}", STEPS) == pytest.approx([recenter(s, center) for s in raw], abs=1e-6)
    assert scores(f"hf-prm:{prm},center=0.5", STEPS) == pytest.approx(raw, abs=1e-6)

    served = tmp_path / "served"
    run = CliRunner().invoke(app, ["train", "prm-export", str(prm), str(served)])
    assert run.exit_code == 0, run.output
    assert read_center(served) == center and f"center={center:g}" in (served / "README.md").read_text()


def test_calibrate_refuses_data_without_both_kinds_and_a_missing_folder(math_shepherd_dir, tmp_path):  # noqa: F811
    data = labelled(tmp_path, [(STEPS, -1)] * 2)
    run = CliRunner().invoke(app, ["verifier", "calibrate", str(math_shepherd_dir), "--data", str(data)])
    assert isinstance(run.exception, RedlineError) and "with an error and solutions without" in str(run.exception)
    assert not (math_shepherd_dir / CALIBRATION_FILE).exists()
    run = CliRunner().invoke(app, ["verifier", "calibrate", str(tmp_path / "nope"), "--data", str(data)])
    assert isinstance(run.exception, RedlineError) and "no PRM folder" in str(run.exception)
