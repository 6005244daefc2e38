"""Targets, the Markdown table, and the result files (pure except :func:`write_results`)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.cpu import CpuShare
from bench.pgstats import DbCost
from bench.stats import Summary

README_START = "<!-- bench:latest:start -->"
README_END = "<!-- bench:latest:end -->"


@dataclass
class Row:
    """One line of the table: a scenario (or a ceiling) with what it is compared against."""

    scenario: str
    load: str
    summary: Summary
    cpu: CpuShare | None = None
    #: The name and rate of the ceiling this row is compared with (none for ceilings).
    ceiling: str | None = None
    ceiling_rps: float | None = None
    #: Scenario / ceiling, as a fraction; or another comparison that ``ratio_text`` explains.
    ratio: float | None = None
    ratio_text: str | None = None
    target: str | None = None
    met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["summary"] = self.summary.as_dict()
        return out


@dataclass
class Cost:
    """Per successful request: CPU milliseconds by who spent them, and PostgreSQL work."""

    server_cpu_ms: float | None
    database_cpu_ms: float | None
    bench_cpu_ms: float | None
    db: DbCost | None = None
    #: The ceiling's CPU per request over this one's: the ratio a CPU-bound run would reach.
    cpu_ratio: float | None = None

    @property
    def total_cpu_ms(self) -> float | None:
        parts = (self.server_cpu_ms, self.database_cpu_ms, self.bench_cpu_ms)
        return None if any(p is None for p in parts) else sum(p or 0.0 for p in parts)

    @classmethod
    def of(cls, cpu: CpuShare | None, requests: int, db: DbCost | None) -> Cost:
        def ms(part: str) -> float | None:
            value = cpu.ms_per(part, requests) if cpu else None
            return round(value, 3) if value is not None else None

        return cls(ms("server"), ms("database"), ms("bench"), db)


@dataclass
class Goal:
    """One target of the issue, evaluated on this run's numbers."""

    name: str
    rule: str
    value: str
    met: bool


@dataclass
class Report:
    meta: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: What one request cost (CPU, database work), by scenario key.
    costs: dict[str, Cost] = field(default_factory=dict)
    #: Admission control: registration past saturation at several connection counts.
    curve: list[Row] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "rows": [r.as_dict() for r in self.rows],
            "goals": [asdict(g) for g in self.goals],
            "notes": self.notes,
            "costs": {k: asdict(v) for k, v in self.costs.items()},
            "curve": [r.as_dict() for r in self.curve],
            "extra": self.extra,
        }


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(row: Row) -> str:
    if row.ratio_text:
        return row.ratio_text
    if row.ratio is None:
        return "-"
    return f"{100 * row.ratio:.0f}%"


def _met(met: bool | None) -> str:
    if met is None:
        return ""
    return "met" if met else "**MISSED**"


def render_table(rows: list[Row]) -> str:
    """The Markdown table: one row per ceiling and scenario."""
    head = (
        "| scenario | load | req/s | p50 ms | p99 ms | errors | compared with | ceiling req/s "
        "| ratio | target | | CPU % bench/server/db/other |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        s = r.summary
        lines.append(
            "| "
            + " | ".join(
                [
                    r.scenario,
                    r.load,
                    _num(s.rps),
                    _num(s.p50_ms),
                    _num(s.p99_ms),
                    str(s.errors),
                    r.ceiling or "-",
                    _num(r.ceiling_rps),
                    _ratio(r),
                    r.target or "",
                    _met(r.met),
                    r.cpu.short() if r.cpu else "-",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def render_curve(rows: list[Row]) -> str:
    """The admission-control curve: what was accepted (rate, latency) and what was shed."""
    lines = [
        "| scenario | load | accepted req/s | ratio | accepted p50 ms | accepted p99 ms "
        "| answered 503 overloaded | 503 p99 ms | errors | CPU % bench/server/db/other |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        s = r.summary
        lines.append(
            "| "
            + " | ".join(
                [
                    r.scenario,
                    r.load,
                    _num(s.rps),
                    _ratio(r),
                    _num(s.p50_ms),
                    _num(s.p99_ms),
                    f"{100 * s.shed_share:.0f}%",
                    _num(s.shed_p99_ms) if s.shed else "-",
                    str(s.errors),
                    r.cpu.short() if r.cpu else "-",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def render_costs(costs: dict[str, Cost]) -> str:
    lines = [
        "| scenario | server CPU ms | PostgreSQL+Redis CPU ms | generator CPU ms "
        "| ratio by CPU | transactions | new connections per 1k | rows read | rows written "
        "| most rows read at (scans, rows) |",
        "|" + "---|" * 10,
    ]
    for name, c in costs.items():
        d = c.db
        where = (
            ", ".join(f"{w} ({n:g}, {r:g})" for w, (n, r) in d.top_reads_per_request.items())
            if d
            else ""
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    _num(c.server_cpu_ms, 2),
                    _num(c.database_cpu_ms, 2),
                    _num(c.bench_cpu_ms, 2),
                    f"{100 * c.cpu_ratio:.0f}%" if c.cpu_ratio is not None else "-",
                    _num(d.transactions_per_request, 2) if d else "-",
                    _num(d.new_connections_per_1k, 1) if d else "-",
                    _num(d.rows_read_per_request, 1) if d else "-",
                    _num(d.rows_written_per_request, 1) if d else "-",
                    where or "-",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    meta = report.meta
    parts = [
        f"### Latest run: {meta.get('finished_at', '?')}",
        "",
        f"{meta.get('machine', '')}. `realname serve --workers {meta.get('workers', '?')}`"
        + (
            f" and `realname serve --role tokens --workers {meta['token_workers']}` (every "
            "introspection row)"
            if meta.get("token_workers")
            else ""
        )
        + f" on PostgreSQL {meta.get('postgres', '?')} (same machine), Redis rate limits; "
        f"argon2id {meta.get('profile', '?')}. Wall time {_num(meta.get('wall_seconds'), 0)} s.",
        "",
        render_table(report.rows),
        "",
    ]
    if report.curve:
        parts += [
            "Admission control: registration L1 past saturation (ratio: accepted req/s over "
            "the argon2id ceiling):",
            "",
            render_curve(report.curve),
            "",
        ]
    if report.costs:
        parts += [
            "Cost per successful request (CPU from /proc; PostgreSQL counters of the bench "
            "database; both include the background worker's jobs). 'ratio by CPU' is the "
            "ceiling's CPU per request over the scenario's: the ratio a run limited only by "
            "the machine's CPU would reach, and barely moved by other load on the machine:",
            "",
            render_costs(report.costs),
            "",
        ]
    parts += [
        "Targets (ratios from this run):",
        "",
    ]
    parts += [
        f"- {'met' if g.met else '**MISSED**'}: {g.name}: {g.rule} (this run: {g.value})"
        for g in report.goals
    ]
    if report.notes:
        parts += ["", "Notes:", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(parts) + "\n"


def write_results(report: Report, results_dir: Path, readmes: list[Path] | None = None) -> str:
    """Write ``latest.json`` and ``latest.md`` (atomically); refresh the READMEs' tables."""
    results_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(report)
    for name, text in (
        ("latest.json", json.dumps(report.as_dict(), indent=2, ensure_ascii=False, default=str)),
        ("latest.md", markdown),
    ):
        tmp = results_dir / (name + ".tmp")
        tmp.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        tmp.replace(results_dir / name)
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    block = f"{README_START}\n{markdown}{README_END}"
    for readme in readmes or []:
        if not readme.exists():
            continue
        text = readme.read_text(encoding="utf-8")
        if pattern.search(text):
            readme.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")
    return markdown
