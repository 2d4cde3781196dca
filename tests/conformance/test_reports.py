"""The JSON document follows its versioned schema and round-trips; every report shows the rows."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from conformance.api import check, run
from conformance.reports import to_html, to_markdown
from conformance.reports.results import SCHEMA_VERSION, RunResult, Status
from tests.conformance import planted

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (.[test])")


@pytest.fixture(scope="module")
def mixed_run() -> RunResult:
    """A run with every status: findings, failures, refusals, values, not implemented.

    onnxruntime supplies the findings (it has no ghost batch norm); a torch-like
    training step of batch norm the value where normref refuses (the unbiased running
    variance of one value per channel).
    """
    pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')"
    )
    result = run(["onnxruntime"], ops=["group_norm", "ghost_batch_norm"], dtypes=["float32"])
    failing = check(planted.layer_norm_unbiased, "layer_norm", dtypes=["float32"])
    accepting = check(
        planted.batch_norm_train_torch,
        "batch_norm_train",
        "torch",
        dtypes=["float32"],
        case="batch_norm_train/one-sample-groups",
    )
    for extra in (failing, accepting):
        result.results += extra.results
        result.implementations += extra.implementations
    return result


def test_every_status_is_present(mixed_run):
    assert all(
        mixed_run.counts[s] for s in ("pass", "convention", "fail", "not_implemented", "accepts")
    )


def _schema(version: int) -> dict:
    return json.loads(
        files("conformance.reports").joinpath(f"schemas/results-v{version}.json").read_text()
    )


def test_the_json_document_follows_the_schema(mixed_run):
    schema = _schema(3)
    document = json.loads(json.dumps(mixed_run.to_json(), allow_nan=False))
    jsonschema.Draft202012Validator(schema).validate(document)
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["normref_version"]


def test_the_json_document_round_trips(mixed_run, tmp_path):
    path = tmp_path / "run.json"
    mixed_run.write_json(path)
    again = RunResult.read_json(path)
    assert again.to_json() == json.loads(path.read_text())
    assert again.counts == mixed_run.counts


def test_another_schema_version_is_refused(mixed_run):
    document = mixed_run.to_json()
    document["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="not a normref-conformance-results document of version"):
        RunResult.from_json(document)


def test_reports_show_findings_failures_and_the_worst_element(mixed_run):
    markdown, page = to_markdown(mixed_run), to_html(mixed_run)
    for text in (markdown, page):
        assert "group_affine=&#x27;per_group&#x27;" in text or "group_affine='per_group'" in text
        assert "correction=1" in text
        assert "p99" in text
        assert "input |mean|/std up to" in text
    assert "| onnxruntime GroupNormalization-21 | group_norm |" in markdown
    assert "**forward only**: onnxruntime GroupNormalization-21" in markdown
    assert page.count("<svg") == 1


def test_a_document_without_conditioning_measures_still_reads(mixed_run):
    """The measure was added to version 1 as an optional field: rows written before it read
    back, stating |mean|/std."""
    document = json.loads(json.dumps(mixed_run.to_json(), allow_nan=False))
    for row in document["results"]:
        del row["conditioning_measure"]
    jsonschema.Draft202012Validator(_schema(3)).validate(document)
    again = RunResult.from_json(document)
    assert all(r.conditioning_measure is None for r in again.results)
    assert "input |mean|/std up to" in to_markdown(again)


def _as_version_2(document: dict) -> dict:
    """``document`` as version 2 wrote it: without the run's ``interrupted`` and the rows'
    ``modified_inputs``."""
    old = json.loads(json.dumps(document, allow_nan=False))
    old["schema_version"] = 2
    del old["interrupted"]
    for row in old["results"]:
        del row["modified_inputs"]
    return old


def test_a_version_2_document_still_reads(mixed_run):
    """It reads with no input written into and the run not interrupted, and is written back as
    a valid version 3."""
    old = _as_version_2(mixed_run.to_json())
    jsonschema.Draft202012Validator(_schema(2)).validate(old)
    again = RunResult.from_json(old)
    assert not again.interrupted
    assert all(r.modified_inputs == [] for r in again.results)
    assert again.counts == mixed_run.counts
    jsonschema.Draft202012Validator(_schema(3)).validate(json.loads(again.json_text()))


def _as_version_1(document: dict) -> dict:
    """``document`` as version 1 wrote it: each output's reference_ulps (here a stand-in value:
    version 1's unit, ulps of the exact values, is not computed any more) in place of
    version 2's reference_bound_ulps and nonfinite_mismatches."""
    old = _as_version_2(document)
    old["schema_version"] = 1
    for row in old["results"]:
        for output in row["outputs"] + row["baseline"]:
            del output["reference_bound_ulps"], output["nonfinite_mismatches"]
            output["reference_ulps"] = 7215.0
    return old


def test_a_document_written_by_the_first_version_1_writer_validates_and_reads():
    """A run written by the suite's first release (before rows had ``evidence``), kept as
    written but for its platform string: it validates against the version 1 schema and loads."""
    path = Path(__file__).parent / "data" / "results-v1-first.json"
    old = json.loads(path.read_text())
    assert old["schema_version"] == 1
    assert all("evidence" not in row for row in old["results"])
    schema = json.loads(
        files("conformance.reports").joinpath("schemas/results-v1.json").read_text()
    )
    jsonschema.Draft202012Validator(schema).validate(old)
    again = RunResult.from_json(old)
    assert [r.status for r in again.results] == [Status(r["status"]) for r in old["results"]]
    assert "layer_norm" in to_markdown(again)


def test_a_version_1_document_still_reads(mixed_run):
    """Its reference_ulps is in another unit than the budget: dropped on reading, never shown
    beside a budget; the document is written back as a valid version 3."""
    old = _as_version_1(mixed_run.to_json())
    schema = json.loads(
        files("conformance.reports").joinpath("schemas/results-v1.json").read_text()
    )
    jsonschema.Draft202012Validator(schema).validate(old)
    again = RunResult.from_json(old)
    outputs = [o for r in again.results for o in r.outputs + r.baseline]
    assert outputs
    assert all(o["reference_bound_ulps"] is None for o in outputs)
    assert all("reference_ulps" not in o for o in outputs)
    markdown = to_markdown(again)
    assert "input |mean|/std up to" in markdown
    assert "7.22e+03" not in markdown
    assert "7215" not in markdown
    rewritten = json.loads(json.dumps(again.to_json(), allow_nan=False))
    jsonschema.Draft202012Validator(_schema(3)).validate(rewritten)
    assert rewritten["schema_version"] == SCHEMA_VERSION == 3
