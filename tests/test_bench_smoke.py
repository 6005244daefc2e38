"""The bench harness's pure helpers (no servers, no load, no timing assertions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from stdnum.cn import ric

import bench.main
import bench.scenarios
from app.identity import parse_id_number, parse_name, parse_phone
from bench.cpu import CpuShare
from bench.identities import People, check_char, registration_body
from bench.loadgen import Outcome, Request, encode_request
from bench.pgstats import DbCost
from bench.profile import top_frames
from bench.report import (
    README_END,
    README_START,
    Cost,
    Goal,
    Report,
    Row,
    render_markdown,
    write_results,
)
from bench.scenarios import overloaded, status_is
from bench.stats import percentile, summarise


def test_people_are_valid_and_unique() -> None:
    """Every generated person passes the service's own parsers; no ID, phone or user repeats."""
    assert check_char("11010519491231002") == "X"  # the README's example number
    people = People(seed=7)
    drawn = [people.person() for _ in range(500)]
    for p in drawn:
        assert parse_id_number(p.id_number).value == p.id_number
        assert ric.calc_check_digit(p.id_number) == p.id_number[-1]
        assert parse_phone(p.phone) == "+86" + p.phone
        assert parse_name(p.real_name) == p.real_name
    for field in ("id_number", "phone", "external_user_id"):
        assert len({getattr(p, field) for p in drawn}) == len(drawn)
    body = json.loads(registration_body(drawn[0], "L2"))
    assert body["level"] == "L2"
    assert body["consent"] == {"policy_version": "2026-01"}


def test_percentile_and_summary() -> None:
    """Linear interpolation between closest ranks (NumPy's default)."""
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0], 0) == 1.0
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([float(v) for v in range(1, 101)], 99) == pytest.approx(99.01)
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="q must"):
        percentile([1.0], 101)
    s = summarise([0.001, 0.003], 2.0, errors=1, statuses={"200": 2, "500": 1})
    assert (s.requests, s.ok, s.errors, s.rps) == (3, 2, 1, 1.0)
    assert s.p50_ms == pytest.approx(2.0)


def test_table_rendering_and_result_files(tmp_path: Path) -> None:
    """The Markdown table shows each scenario next to its ceiling; files and README follow."""
    ceiling = summarise([0.02] * 100, 1.0)
    scenario = summarise([0.5] * 80, 1.0, errors=2)
    report = Report(meta={"finished_at": "now", "workers": 2, "wall_seconds": 12.0})
    report.rows = [
        Row("ceiling: argon2id", "all cores", ceiling),
        Row(
            "registration L1",
            "16 conns",
            scenario,
            CpuShare(bench=1, server=80, database=10, other=2, idle=7),
            "argon2id hashes",
            ceiling.rps,
            scenario.rps / ceiling.rps,
            None,
            ">= 80%",
            True,
        ),
    ]
    report.goals = [Goal("registration L1", "req/s >= 80% of the ceiling", "80%", True)]
    report.costs = {
        "registration_l1": Cost.of(
            report.rows[1].cpu, 80, DbCost(4.5, 0.0, 12.0, 9.0, {"outbox_jobs": (1, 3)})
        )
    }
    readme = tmp_path / "README.md"
    readme.write_text(f"# Bench\n\n{README_START}\nold\n{README_END}\ntail\n")

    markdown = write_results(report, tmp_path / "results", [readme, tmp_path / "missing.md"])

    row = next(line for line in markdown.splitlines() if line.startswith("| registration L1"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:6] == ["registration L1", "16 conns", "80.0", "500.0", "500.0", "2"]
    assert cells[6:12] == ["argon2id hashes", "100.0", "80%", ">= 80%", "met", "1/80/10/2"]
    assert "outbox_jobs (1, 3)" in markdown
    assert json.loads((tmp_path / "results" / "latest.json").read_text())["goals"][0]["met"]
    assert (tmp_path / "results" / "latest.md").read_text() == markdown
    text = readme.read_text()
    assert "old" not in text
    assert markdown in text
    assert text.endswith("tail\n")


def test_request_encoding_profiles_and_options() -> None:
    raw = encode_request("POST", "/x", "127.0.0.1:1", headers={"A": "b"}, body=b'{"k":1}')
    assert raw == (
        b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:1\r\nA: b\r\n"
        b"Content-Type: application/json\r\nContent-Length: 7\r\n\r\n"
        b'{"k":1}'
    )
    frames = top_frames("main (a.py:1);work (b.py:2) 3\nmain (a.py:1);idle (c.py:9) 1\n")
    assert frames.samples == 4
    assert frames.self_top[0] == ("work (b.py)", 3)
    assert ("main (a.py)", 4) in frames.inclusive_top
    assert bench.main._non_defaults(bench.main.parse_args([])) == []
    assert bench.main._non_defaults(bench.main.parse_args(["--scale", "0.5"])) == ["--scale=0.5"]


def test_shed_answers_are_counted_apart_and_shown_on_the_curve() -> None:
    """In the admission-control rows a 503 overloaded is load shed, neither accepted nor an
    error, and the curve table shows accepted rate and latency beside the shed share."""
    out = Outcome()
    req = Request(b"", None)
    shed_body = b'{"status":503,"code":"overloaded"}'
    assert out.record(req, 503, shed_body, 0.002, status_is(201), False, overloaded)
    assert not out.record(req, 201, b"{}", 0.4, status_is(201), False, overloaded)
    assert not out.record(req, 503, b'{"code":"service_unavailable"}', 0.1, status_is(201), False)
    assert (out.shed, out.latencies, out.errors) == ([0.002], [0.4], 1)
    cpu = CpuShare(bench=1, server=80, database=10, other=2, idle=7)
    out.seconds = 1.0
    measured = bench.scenarios.measured(out, cpu)
    assert (measured.summary.requests, measured.summary.ok, measured.summary.shed) == (3, 1, 1)
    assert measured.summary.shed_share == pytest.approx(1 / 3)
    args = bench.main.parse_args([])
    report = bench.main.build_report(
        {},
        summarise([0.02] * 100, 1.0),
        cpu,
        {"registration_l1_64_conns": measured},
        {},
        args,
        10.0,
        bench.scenarios.Durations(),
    )
    assert [r.load for r in report.curve] == ["64 conns"]
    markdown = render_markdown(report)
    row = next(line for line in markdown.splitlines() if line.startswith("| registration L1"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "registration L1",
        "64 conns",
        "1.0",
        "1%",
        "400.0",
        "400.0",
        "33%",
        "2.0",
        "1",
        "1/80/10/2",
    ]
    assert "registration_l1_64_conns" in report.costs
