"""The HTML and terminal reports: the verdict first, then failures, values where normref
refuses and findings; colours legible; one finding once; the page read in a browser."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from rich.console import Console

from conformance.reports import print_report, to_html
from conformance.reports.html import BANNER_COLOURS, COLOURS, DIM, TEXT, budget_shares
from conformance.reports.results import CaseResult, RunResult, Status
from conformance.reports.summary import banner, not_implemented, sections, title
from tests import browser


def _output(name: str, used: float, ok: bool) -> dict:
    return {
        "name": name,
        "direction": "forward",
        "ok": ok,
        "dtype": "float32",
        "expected_dtype": "float32",
        "max_ulps": 10.0 * used,
        "p99_ulps": 5.0 * used,
        "used": used,
        "worst_index": [0, 1],
        "budget_ulps": 10.0,
        "actual": 0.5,
        "expected": 0.25,
        "reference_bound_ulps": 0.1,
        "nonfinite_mismatches": 0,
        "input_value": 1.0,
        "problem": None,
    }


def _row(implementation: str, op: str, status: Status, **fields) -> CaseResult:
    values = {
        "implementation": implementation,
        "framework": "fw",
        "op": op,
        "case": f"{op}/typical",
        "kind": "edge",
        "seed": 0,
        "dtype": "float32",
        "status": status,
        "model": "fw",
    }
    return CaseResult(**(values | fields))


@pytest.fixture
def run() -> RunResult:
    """Two implementations of one framework that share a finding, a failure, a value on a
    refused input, rows within budget and an op not implemented."""
    finding = {"explanation": "fw convention: eps=0.001 (normref: eps=1e-05)"}
    rows = [
        _row("fw.Norm1d", "layer_norm", Status.PASS, outputs=[_output("y", 0.01, True)]),
        *(
            _row(
                impl,
                "layer_norm",
                Status.CONVENTION,
                outputs=[_output("y", 0.5, True)],
                baseline=[_output("y", 300.0, False)],
                **finding,
            )
            for impl in ("fw.Norm1d", "fw.Norm2d")
        ),
        _row(
            "fw.Norm2d",
            "batch_norm",
            Status.FAIL,
            outputs=[_output("y", 2e6, False), _output("dx", 0.1, True)],
            diagnosis="explained by correction=1 instead of the declared 0",
        ),
        _row(
            "fw.Norm1d",
            "layer_norm",
            Status.ACCEPTS,
            case="layer_norm/one-sample-groups",
            description="groups of one sample",
            explanation="y of shape (4, 1)",
        ),
        _row("fw", "rms_norm", Status.NOT_IMPLEMENTED, explanation="fw has no rms_norm"),
    ]
    return RunResult(
        rows,
        settings={"frameworks": ["fw"], "dtypes": ["float32"]},
        environment={"started": "2026-01-02T03:04:05+00:00"},
    )


def _contrast(first: str, second: str) -> float:
    """The WCAG 2 contrast ratio of two sRGB colours ``#rrggbb``."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_contrast_ratio_matches_wcag_examples():
    assert _contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert _contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


def test_every_colour_with_text_has_aa_contrast():
    """Status colours carry white text (cells, badges, banner) and are text on white (section
    headings): 4.5:1 or more either way."""
    for colour in [*COLOURS.values(), *BANNER_COLOURS.values()]:
        assert _contrast(colour, "#ffffff") >= 4.5, colour
    for colour in (TEXT, DIM):
        assert _contrast(colour, "#ffffff") >= 4.5, colour


def test_failures_come_first_then_refused_inputs_then_conventions(run):
    assert [s.status for s in sections(run)] == [Status.FAIL, Status.ACCEPTS, Status.CONVENTION]
    page = to_html(run)
    headings = re.findall(r"<h2[^>]*>([^<(]+)", page)
    order = ["Fails ", "Returns a value where normref refuses ", "Differs by convention "]
    assert [h for h in headings if h in order] == order
    assert page.index("class='banner'") < page.index("<h2")
    out = StringIO()
    print_report(run, Console(file=out, width=200))
    text = out.getvalue()
    assert text.lstrip().startswith("Fails")
    positions = [text.index(f"\n{h.strip()} (") for h in order]
    assert positions == sorted(positions)


def test_the_banner_says_fails_passes_or_conventions_only(run):
    assert banner(run).kind == "fails"
    without_failure = RunResult([r for r in run.results if r.status is not Status.FAIL])
    assert banner(without_failure).kind == "conventions"
    passing = RunResult([r for r in run.results if r.status is Status.PASS])
    assert banner(passing).kind == "passes"
    assert banner(passing).detail == "All 1 checked rows are within budget."


def test_a_finding_shared_by_implementations_is_shown_once(run):
    (finding,) = next(s for s in sections(run) if s.status is Status.CONVENTION).groups
    assert finding.implementations == ["fw.Norm1d", "fw.Norm2d"]
    page = to_html(run)
    assert page.count("fw convention: eps=0.001") == 1
    assert "<b>fw.Norm1d, fw.Norm2d</b>" in page


def test_not_implemented_ops_are_one_line(run):
    assert not_implemented(run) == ["fw has no rms_norm"]
    page = to_html(run)
    matrix = page[page.index("<section id='matrix'>") : page.index("<section id='errors'>")]
    assert "Not implemented: fw has no rms_norm." in matrix
    assert "<td>rms_norm</td>" not in matrix


def test_the_title_names_the_framework_and_the_page_the_date(run):
    assert title(run) == "normref conformance report: fw"
    page = to_html(run)
    assert "<title>normref conformance report: fw</title>" in page
    assert "<time datetime='2026-01-02T03:04:05+00:00'>" in page


def test_the_histogram_colours_each_output_by_its_own_status(run):
    """The failing row's dx is within budget: counted as such, not as failing; the findings'
    outputs are within budget of the convention only."""
    shares, unshown = budget_shares(run)
    assert unshown == 0
    assert shares[Status.FAIL] == {4: 1}  # y, 2e6 of its budget: the last bin
    assert shares[Status.PASS] == {-2: 1, -1: 1}  # the passing row's y, the failing row's dx
    assert shares[Status.CONVENTION] == {-1: 2}
    page = to_html(run)
    assert (
        f'fill="{COLOURS[Status.FAIL]}"><title>1 outputs out of budget, error / budget 1e4 or more'
        in page
    )
    assert "error / budget 1e-1 to 1e0</title>" in page


@pytest.mark.skipif(not browser.available(), reason=browser.UNAVAILABLE)
def test_the_page_in_a_browser(run, tmp_path):
    """At 1280 px the page has no horizontal overflow; the sections come in order; the row
    table sorts and filters."""
    path = tmp_path / "report.html"
    path.write_text(to_html(run))
    with browser.session(1280) as driver:
        driver.get(path.as_uri())
        assert driver.execute_script("return document.documentElement.scrollWidth") <= (
            driver.execute_script("return window.innerWidth")
        )
        ids = driver.execute_script(
            "return Array.from(document.querySelectorAll('body > section')).map(s => s.id)"
        )
        assert ids[:4] == [
            "facts",
            "fails",
            "returns-where-normref-refuses",
            "differs-by-convention",
        ]
        driver.execute_script("document.querySelector('#every-row details').open = true")
        visible = "return Array.from(document.querySelectorAll('#rows tbody tr')).filter(r => !r.hidden).map(r => r.dataset.status)"
        assert len(driver.execute_script(visible)) == len(run.results)
        choose = (
            "var s = document.querySelector('#row-status'); s.value = arguments[0]; "
            "s.dispatchEvent(new Event('change'))"
        )
        driver.execute_script(choose, "fail")
        assert driver.execute_script(visible) == ["fail"]
        driver.execute_script(choose, "")
        driver.find_element("css selector", "#row-filter").send_keys("Norm2d")
        assert sorted(driver.execute_script(visible)) == ["convention", "fail"]
        driver.find_element("css selector", "#row-filter").clear()
        driver.execute_script(
            "document.querySelector('#row-filter').dispatchEvent(new Event('input'))"
        )
        (header,) = [
            th
            for th in driver.find_elements("css selector", "#rows th")
            if th.text.startswith("error / budget")
        ]
        header.click()
        header.click()  # descending
        first = driver.execute_script(
            "return document.querySelector('#rows tbody tr').dataset.status"
        )
        assert first == "fail"
        assert driver.execute_script("return document.documentElement.scrollWidth") <= (
            driver.execute_script("return window.innerWidth")
        )
