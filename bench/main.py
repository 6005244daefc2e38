"""``python -m bench``: set up, measure ceilings and scenarios, tear down, write the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import asyncpg
import uvloop

from app.crypto import OWASP_MINIMUM, Argon2Profile
from bench.ceilings import measure_argon2
from bench.cpu import CpuMeter, CpuShare, wait_for_quiet
from bench.identities import People
from bench.loadgen import Target
from bench.profile import Frames, Profiler, find_py_spy
from bench.report import Cost, Goal, Report, Row, write_results
from bench.scenarios import (
    ADMISSION_CONNECTIONS,
    OVERLOADED_RETRY_AFTER,
    Bench,
    Durations,
    Measured,
)
from bench.servers import (
    ScratchDatabase,
    ServerProcess,
    create_client,
    create_kv_table,
    free_port,
    realname_server,
    run_cli,
    service_env,
    trivial_server,
)
from bench.stats import Summary

BENCH_DIR = Path(__file__).resolve().parent
README = BENCH_DIR.parent / "README.md"
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
HOST = "127.0.0.1"
KV_ROWS = 1000

#: The issue's targets.
REGISTRATION_MIN = {"L1": 0.70, "L2": 0.55}
#: Registration L1's p99 at most this many times its p50.
REGISTRATION_P99_MAX_FACTOR = 3.0
CODE_CHECK_MIN = 0.04
TOKEN_ISSUE_MIN = 0.06
INTROSPECTION_MIN = 0.30
INTROSPECTION_P99_MAX_MS = 50.0
MIXED_P99_MAX_FACTOR = 3.0
MIXED_REGISTRATION_MIN = 0.55
#: The SDK's offline verification (TokenVerifier, JWKS cached): milliseconds per token.
SDK_VERIFY_MAX_MS = 0.3
WALL_MAX_SECONDS = 600.0
#: Rows during which other programs took more than this share of the machine are flagged.
DISTURBED_PCT = 10.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark `realname serve` on PostgreSQL against ceilings from the same run.",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="server processes (cores)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE),
        help="any database on the PostgreSQL server; a realname_bench_* one is made and dropped",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS),
        help="Redis for the shared rate limits ('' for none)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="connections (fast paths)")
    parser.add_argument(
        "--token-workers",
        type=int,
        default=None,
        help="processes of a `realname serve --role tokens` beside the server, which every "
        "introspection scenario goes to, as a load balancer would route /v1/tokens/* (default: "
        "--workers); 0: none, everything to the server",
    )
    parser.add_argument(
        "--registration-concurrency", type=int, default=16, help="connections (registrations)"
    )
    parser.add_argument(
        "--mixed-rate", type=float, default=100.0, help="introspections/s in the mixed scenario"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every load duration (0.2 = quick look)"
    )
    parser.add_argument("--memory-kib", type=int, default=OWASP_MINIMUM.memory_kib)
    parser.add_argument("--time-cost", type=int, default=OWASP_MINIMUM.time_cost)
    parser.add_argument("--parallelism", type=int, default=OWASP_MINIMUM.parallelism)
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--no-readme",
        action="store_true",
        help="do not refresh the tables in bench/README.md and README.md",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the generated people")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for `realname serve` (repeatable), e.g. REALNAME_HASH_WORKERS=1",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy during each scenario (diagnosis only: results go "
        "to <results-dir>/profiled/, not latest.*)",
    )
    parser.add_argument(
        "--budget", type=float, default=570.0, help="abort (and clean up) after this many seconds"
    )
    return parser.parse_args(argv)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "argon2-cffi"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    for dist in ("sqlalchemy", "asyncpg", "pydantic", "redis", "limits", "pyjwt"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


async def _postgres_version(url: str) -> str:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _profile_text(p: Argon2Profile) -> str:
    return f"m={p.memory_kib // 1024} MiB, t={p.time_cost}, p={p.parallelism}"


class Run:
    """One bench run: owns the scratch database, the servers and the work directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        #: Processes of the token-path server (0: none).
        self.token_workers: int = (
            args.workers if args.token_workers is None else max(0, args.token_workers)
        )
        self.profile = Argon2Profile(args.memory_kib, args.time_cost, args.parallelism)
        self.durations = Durations().scaled(args.scale)
        self.db = ScratchDatabase(args.database_url)
        self.workdir = Path(tempfile.mkdtemp(prefix="realname-bench-"))
        self.servers: list[ServerProcess] = []
        self.started = time.monotonic()
        self.results: dict[str, Measured] = {}
        self.argon2: Summary | None = None
        self.argon2_cpu: CpuShare | None = None
        self.problems: dict[str, int] = {}
        self.busy_before: float | None = None
        self.drain: dict[str, float] = {}
        self.bench: Bench | None = None
        self.profiler: Profiler | None = None
        self.profiles: dict[str, Frames] = {}
        if args.profile:
            py_spy = find_py_spy()
            if py_spy is None:
                raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
            self.profiler = Profiler(py_spy, args.results_dir / "profiled" / "profiles")

    async def measure(self) -> None:
        args, d = self.args, self.durations
        self.busy_before = await wait_for_quiet()
        log(f"machine {self.busy_before:.0f}% busy before the run")
        log(f"database {self.db.name}; logs in {self.workdir}")
        await self.db.create()
        extra = dict(item.split("=", 1) for item in args.server_env)
        env = service_env(self.db.url, args.redis_url or None, self.profile, self.workdir, **extra)
        await run_cli(env, "migrate")
        keys = {
            "L1": await create_client(env, "bench-l1", "L1"),
            "L2": await create_client(env, "bench-l2", "L2"),
        }

        log(f"ceiling: argon2id ({_profile_text(self.profile)}) on every core, {d.ceiling:.0f} s")
        loop = asyncio.get_running_loop()
        meter = CpuMeter(None)
        meters: list[CpuMeter] = []
        argon2, hash_cpu = await loop.run_in_executor(
            None,
            measure_argon2,
            self.profile,
            d.ceiling,
            None,
            lambda: meters.append(CpuMeter(None)),
        )
        meter = meters[0] if meters else meter  # the counted window only, not the start-up
        self.argon2 = argon2
        self.argon2_cpu = meter.share(server_seconds=hash_cpu)  # "server": the hashing processes
        hash_rate = argon2.rps
        log(f"  {hash_rate:.1f} hashes/s")

        await create_kv_table(self.db.url, KV_ROWS)
        port = free_port()
        trivial = trivial_server(self.db.url, port, args.workers, self.workdir / "trivial.log")
        self.servers.append(trivial)
        await trivial.start(port, args.workers)
        # The trivial app's PostgreSQL backends (its primary-key SELECT) are the database's share,
        # not other programs'.
        tb = Bench(
            Target(HOST, port),
            {},
            d,
            concurrency=args.concurrency,
            server_pid=trivial.pid,
            database_url=self.db.url,
        )
        log(f"ceiling: trivial GET, {args.concurrency} connections")
        self.results["trivial"] = await tb.trivial("trivial", ["/trivial"])
        log(f"  {self.results['trivial'].summary.rps:.0f} req/s")
        keys_order = list(range(KV_ROWS))
        random.Random(0).shuffle(keys_order)  # noqa: S311
        log(f"reference: trivial primary-key SELECT, {args.concurrency} connections")
        self.results["trivial_db"] = await tb.trivial(
            "trivial_db", [f"/trivial/db/{k}" for k in keys_order]
        )
        log(f"  {self.results['trivial_db'].summary.rps:.0f} req/s")
        log(f"reference: a token issue's transaction on the driver alone, {args.concurrency} conns")
        self.results["trivial_tx"] = await tb.trivial(
            "trivial_tx", [f"/trivial/tx/{k}" for k in keys_order], method="POST", expect=201
        )
        log(f"  {self.results['trivial_tx'].summary.rps:.0f} req/s")
        self.profiles.update(tb.profiles)
        await trivial.stop()

        port = free_port()
        server = realname_server(env, port, args.workers, self.workdir / "serve.log")
        self.servers.append(server)
        await server.start(port, args.workers)
        token_target, token_pid = None, None
        if self.token_workers:
            token_port = free_port()
            tokens = realname_server(
                env, token_port, self.token_workers, self.workdir / "tokens.log", role="tokens"
            )
            self.servers.append(tokens)
            await tokens.start(token_port, self.token_workers)
            token_target, token_pid = Target(HOST, token_port), tokens.pid
        b = Bench(
            Target(HOST, port),
            keys,
            d,
            concurrency=args.concurrency,
            registration_concurrency=args.registration_concurrency,
            mixed_rate=args.mixed_rate,
            server_pid=server.pid,
            people=People(args.seed),
            profiler=self.profiler,
            database_url=self.db.url,
            token_target=token_target,
            token_pid=token_pid,
        )
        self.bench = b
        steps: list[tuple[str, str, Callable[[], Awaitable[Measured]]]] = [
            ("registration_l1", "registration L1", lambda: b.registration("L1", hash_rate)),
            ("registration_l2", "registration L2", lambda: b.registration("L2", hash_rate)),
            ("code_check", "code check", b.code_check),
            ("token_issue", "token issue", b.token_issue),
            ("introspection", "introspection", b.introspection),
            ("sdk_verification", "SDK offline verification", b.sdk_verification),
            (
                "introspection_unloaded",
                f"introspection at {args.mixed_rate:g}/s (unloaded)",
                lambda: b.introspection_at_rate(d.mixed_baseline),
            ),
        ]
        for name, label, step in steps:
            log(label)
            self.results[name] = await step()
            server.check_alive(label)
            s = self.results[name].summary
            log(
                f"  {s.rps:.1f} req/s, p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms, "
                f"{s.errors} errors"
            )
        log(f"mixed: registrations L1 + introspection at {args.mixed_rate:g}/s")
        regs, intro = await b.mixed(hash_rate)
        server.check_alive("mixed")
        self.results["mixed_registration"], self.results["mixed_introspection"] = regs, intro
        log(
            f"  registrations {regs.summary.rps:.1f}/s; introspection p99 "
            f"{intro.summary.p99_ms:.1f} ms"
        )
        for conns in ADMISSION_CONNECTIONS:
            log(f"admission control: registrations L1, {conns} connections")
            key = f"registration_l1_{conns}_conns"
            self.results[key] = await b.admission(conns, hash_rate)
            server.check_alive(f"admission control at {conns} connections")
            s = self.results[key].summary
            log(
                f"  accepted {s.rps:.1f}/s, p99 {s.p99_ms:.1f} ms; shed {s.shed_share:.0%} "
                f"(p99 {s.shed_p99_ms:.1f} ms); {s.errors} errors"
            )
        log(f"webhook delivery: revocations at {args.mixed_rate:g}/s to a local receiver")
        hooks = await b.webhooks(d.mixed_baseline)
        server.check_alive("webhook delivery")
        self.results["webhook_delivery"] = hooks
        log(
            f"  {hooks.summary.rps:.1f} events/s, p50 {hooks.summary.p50_ms:.1f} ms, "
            f"p99 {hooks.summary.p99_ms:.1f} ms, {hooks.summary.errors} errors"
        )
        self.problems = dict(b.pools.problems)
        self.drain = dict(b.pools.drain_seconds)
        self.profiles.update(b.profiles)

    async def cleanup(self) -> None:
        for server in reversed(self.servers):
            try:
                await server.stop()
            except Exception as exc:  # report, keep cleaning
                log(f"could not stop {server.name}: {exc!r}")
        try:
            await asyncio.wait_for(self.db.drop(), 60)
        except Exception as exc:
            log(f"could not drop database {self.db.name}: {exc!r}")

    def report(self, postgres: str) -> Report:
        a = self.args
        wall = time.monotonic() - self.started
        meta = {
            "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} cores ({_cpu_model()})",
            "workers": a.workers,
            "token_workers": self.token_workers,
            "postgres": postgres,
            "profile": _profile_text(self.profile),
            "concurrency": a.concurrency,
            "registration_concurrency": a.registration_concurrency,
            "mixed_rate": a.mixed_rate,
            "scale": a.scale,
            "server_env": a.server_env,
            "durations": self.durations.__dict__,
            "versions": _versions(),
            "wall_seconds": round(wall, 1),
            "machine_busy_before_percent": self.busy_before,
            "checks_drain_seconds": self.drain,
            "generator": "bench.loadgen: asyncio + uvloop + httptools, keep-alive HTTP/1.1, "
            "in the bench process on the same cores",
        }
        return build_report(
            meta, self.argon2, self.argon2_cpu, self.results, self.problems, a, wall, self.durations
        )


def build_report(
    meta: dict[str, object],
    argon2: Summary | None,
    argon2_cpu: CpuShare | None,
    results: dict[str, Measured],
    problems: dict[str, int],
    a: argparse.Namespace,
    wall: float,
    d: Durations,
) -> Report:
    report = Report(meta=dict(meta))
    rows = report.rows
    conns = f"{a.concurrency} conns"
    rconns = f"{a.registration_concurrency} conns"
    argon_name = "argon2id hashes"
    hash_rate = argon2.rps if argon2 else None
    if argon2:
        rows.append(
            Row(f"ceiling: argon2id, {os.cpu_count()} processes", "all cores", argon2, argon2_cpu)
        )
    trivial = results.get("trivial")
    trivial_rps = trivial.summary.rps if trivial else None
    if trivial:
        rows.append(Row("ceiling: trivial GET", conns, trivial.summary, trivial.cpu))
    if argon2 is not None:
        report.costs["argon2 (per hash)"] = Cost.of(argon2_cpu, argon2.ok, None)
    report.costs.update(
        (k, Cost.of(m.cpu, m.summary.ok, m.db)) for k, m in results.items() if "mixed" not in k
    )
    for key, cost in report.costs.items():
        basis = report.costs.get("argon2 (per hash)" if "registration" in key else "trivial")
        unrelated = ("trivial", "argon2 (per hash)", "sdk_verification", "webhook_delivery")
        if key in unrelated or basis is None:
            continue
        if basis.total_cpu_ms and cost.total_cpu_ms:
            cost.cpu_ratio = basis.total_cpu_ms / cost.total_cpu_ms
    for key, label in (
        ("trivial_db", "reference: trivial PK SELECT"),
        ("trivial_tx", "reference: token issue's transaction, raw asyncpg"),
    ):
        if (ref := results.get(key)) is not None:
            rows.append(
                Row(
                    label,
                    conns,
                    ref.summary,
                    ref.cpu,
                    "trivial GET",
                    trivial_rps,
                    ref.summary.rps / trivial_rps if trivial_rps else None,
                )
            )

    def against(
        key: str, label: str, load: str, ceiling: str, rate: float | None, minimum: float | None
    ) -> Row | None:
        m = results.get(key)
        if m is None:
            return None
        ratio = m.summary.rps / rate if rate else None
        met = None if minimum is None or ratio is None else ratio >= minimum
        target = f">= {minimum:.0%}" if minimum is not None else None
        row = Row(label, load, m.summary, m.cpu, ceiling, rate, ratio, None, target, met)
        rows.append(row)
        return row

    reg = [
        against(
            f"registration_{lvl.lower()}",
            f"registration {lvl}",
            rconns,
            argon_name,
            hash_rate,
            REGISTRATION_MIN[lvl],
        )
        for lvl in ("L1", "L2")
    ]
    l1 = reg[0]
    l1_spread = l1.summary.p99_ms / l1.summary.p50_ms if l1 and l1.summary.p50_ms else None
    if l1 is not None:
        l1.target = f"{l1.target}, p99 <= {REGISTRATION_P99_MAX_FACTOR:g}x p50"
        spread_ok = l1_spread is not None and l1_spread <= REGISTRATION_P99_MAX_FACTOR
        l1.met = bool(l1.met) and spread_ok
    fast = [
        against("code_check", "code check", conns, "trivial GET", trivial_rps, CODE_CHECK_MIN),
        against("token_issue", "token issue", conns, "trivial GET", trivial_rps, TOKEN_ISSUE_MIN),
    ]
    intro = against(
        "introspection", "introspection", conns, "trivial GET", trivial_rps, INTROSPECTION_MIN
    )
    if intro is not None:
        p99_ok = intro.summary.p99_ms < INTROSPECTION_P99_MAX_MS
        intro.target = f">= {INTROSPECTION_MIN:.0%}, p99 < {INTROSPECTION_P99_MAX_MS:.0f} ms"
        intro.met = bool(intro.met) and p99_ok
    sdk = results.get("sdk_verification")
    sdk_ms = sdk.own_cpu_ms if sdk is not None else None
    if sdk is not None:
        rows.append(
            Row(
                "SDK offline verification",
                "1 thread",
                sdk.summary,
                sdk.cpu,
                ratio_text=f"{sdk_ms:.3f} ms CPU each" if sdk_ms is not None else None,
                target=f"<= {SDK_VERIFY_MAX_MS} ms",
                met=sdk_ms is not None and sdk_ms <= SDK_VERIFY_MAX_MS,
            )
        )
    rate = f"{a.mixed_rate:g}/s open"
    base = results.get("introspection_unloaded")
    if base is not None:
        rows.append(Row("introspection, unloaded", rate, base.summary, base.cpu))
    mreg = against(
        "mixed_registration",
        "mixed: registration L1",
        rconns,
        argon_name,
        hash_rate,
        MIXED_REGISTRATION_MIN,
    )
    mint = results.get("mixed_introspection")
    factor: float | None = None
    if mint is not None and base is not None:
        factor = mint.summary.p99_ms / base.summary.p99_ms if base.summary.p99_ms else None
        rows.append(
            Row(
                "mixed: introspection",
                rate,
                mint.summary,
                mint.cpu,
                "unloaded p99",
                None,
                factor,
                f"p99 x{factor:.1f}" if factor is not None else None,
                f"p99 <= x{MIXED_P99_MAX_FACTOR:.0f}",
                factor is not None and factor <= MIXED_P99_MAX_FACTOR,
            )
        )
    hooks = results.get("webhook_delivery")
    if hooks is not None:
        rows.append(
            Row(
                "webhook delivery (events/s; ms from commit to arrival)",
                f"{a.mixed_rate:g}/s open",
                hooks.summary,
                hooks.cpu,
            )
        )

    for n in ADMISSION_CONNECTIONS:
        m = results.get(f"registration_l1_{n}_conns")
        if m is not None:
            ratio = m.summary.rps / hash_rate if hash_rate else None
            report.curve.append(
                Row(
                    "registration L1",
                    f"{n} conns",
                    m.summary,
                    m.cpu,
                    argon_name,
                    hash_rate,
                    ratio,
                )
            )

    goals = report.goals
    for row, lvl in zip(reg, ("L1", "L2"), strict=True):
        if row is not None and row.ratio is not None:
            goals.append(
                Goal(
                    row.scenario,
                    f"req/s >= {REGISTRATION_MIN[lvl]:.0%} of the argon2id ceiling",
                    f"{row.ratio:.0%}",
                    row.ratio >= REGISTRATION_MIN[lvl],
                )
            )
    if l1_spread is not None:
        goals.append(
            Goal(
                "registration L1",
                f"p99 <= {REGISTRATION_P99_MAX_FACTOR:g}x p50",
                f"x{l1_spread:.2f}",
                l1_spread <= REGISTRATION_P99_MAX_FACTOR,
            )
        )
    for row, minimum in zip(fast, (CODE_CHECK_MIN, TOKEN_ISSUE_MIN), strict=True):
        if row is not None and row.ratio is not None:
            goals.append(
                Goal(
                    row.scenario,
                    f"req/s >= {minimum:.0%} of the trivial-endpoint ceiling",
                    f"{row.ratio:.1%}",
                    row.ratio >= minimum,
                )
            )
    if sdk is not None and sdk_ms is not None:
        goals.append(
            Goal(
                "SDK offline verification",
                f"<= {SDK_VERIFY_MAX_MS} ms CPU per verification (TokenVerifier, JWKS cached)",
                f"{sdk_ms:.3f} ms",
                sdk_ms <= SDK_VERIFY_MAX_MS and sdk.summary.errors == 0,
            )
        )
    if intro is not None and intro.ratio is not None:
        goals.append(
            Goal(
                "introspection",
                f"req/s >= {INTROSPECTION_MIN:.0%} of the trivial-endpoint ceiling",
                f"{intro.ratio:.0%}",
                intro.ratio >= INTROSPECTION_MIN,
            )
        )
        goals.append(
            Goal(
                "introspection",
                f"p99 < {INTROSPECTION_P99_MAX_MS:.0f} ms at {a.concurrency} connections",
                f"{intro.summary.p99_ms:.1f} ms",
                intro.summary.p99_ms < INTROSPECTION_P99_MAX_MS,
            )
        )
    if factor is not None:
        goals.append(
            Goal(
                "mixed: introspection",
                f"p99 <= {MIXED_P99_MAX_FACTOR:.0f}x its unloaded p99 (same rate)",
                f"x{factor:.2f}",
                factor <= MIXED_P99_MAX_FACTOR,
            )
        )
    if mreg is not None and mreg.ratio is not None:
        goals.append(
            Goal(
                "mixed: registration L1",
                f"req/s >= {MIXED_REGISTRATION_MIN:.0%} of the argon2id ceiling",
                f"{mreg.ratio:.0%}",
                mreg.ratio >= MIXED_REGISTRATION_MIN,
            )
        )
    errors = sum(m.summary.errors for m in results.values())
    goals.append(
        Goal(
            "every scenario",
            "zero errors (and every prepared verification usable)",
            f"{errors} errors" + (f", preparation: {problems}" if problems else ""),
            errors == 0 and not problems,
        )
    )
    goals.append(
        Goal("make bench", f"wall time < {WALL_MAX_SECONDS:.0f} s", f"{wall:.0f} s", wall < 600)
    )
    report.notes = [
        "Ratios compare rates from this run on this machine; absolute numbers drift between "
        "runs and machines.",
        "The load generator runs on the same cores as the server and PostgreSQL. The last "
        "column splits the machine's CPU capacity (cores x time) while a row ran: the load "
        "generator (bench), the server's processes (server), PostgreSQL and Redis (db), and "
        "everything else on the machine (other; large values mean outside interference).",
        f"Closed loop: each connection sends its next request when the answer arrived. "
        f"'{a.mixed_rate:g}/s open': fixed arrival rate, latency counted from the scheduled "
        f"start (no coordinated omission).",
        "Code check submits each prepared code once, so it runs until the codes made by the L2 "
        "registrations run out.",
    ]
    drain = meta.get("checks_drain_seconds")
    if isinstance(drain, dict) and drain:
        report.notes.append(
            "Registration req/s counts accepted POSTs; the in-process worker finished their "
            "checks (and, for L2, SMS) only "
            + ", ".join(f"{s:.0f} s after the {lvl} run" for lvl, s in drain.items())
            + " (polled every 0.5 s)."
        )
    if report.curve:
        report.notes.append(
            "Admission control: a 503 `overloaded` answer is load shed, counted apart (neither "
            "accepted nor an error); the connection that got it waits its Retry-After "
            f"({OVERLOADED_RETRY_AFTER:g} s), as the SDK does, then sends a new registration."
        )
    disturbed = [
        f"{r.scenario} ({r.load})" if r in report.curve else r.scenario
        for r in rows + report.curve
        if r.cpu is not None and r.cpu.other > DISTURBED_PCT
    ]
    if disturbed:
        report.notes.insert(
            0,
            f"Other programs took over {DISTURBED_PCT:.0f}% of the machine during: "
            + "; ".join(disturbed)
            + ". Those rows (and ratios built on them) are disturbed; rerun on a quiet machine.",
        )
    report.extra = {
        "problems": problems,
        "scenarios": {k: v.as_dict() for k, v in results.items()},
        "durations": d.__dict__,
    }
    return report


def _non_defaults(args: argparse.Namespace) -> list[str]:
    """The options of this run that differ from ``make bench`` (such runs leave the README)."""
    defaults = parse_args([])
    skip = {"results_dir", "no_readme", "seed", "budget", "profile"}
    return [
        f"--{name.replace('_', '-')}={value}"
        for name, value in vars(args).items()
        if name not in skip and value != getattr(defaults, name)
    ]


async def run(args: argparse.Namespace) -> int:
    bench = Run(args)
    postgres = "?"
    failure: BaseException | None = None
    try:
        postgres = await _postgres_version(args.database_url)
        async with asyncio.timeout(args.budget):
            await bench.measure()
    except (Exception, TimeoutError) as exc:
        failure = exc
        log(f"run failed: {exc!r}")
        for server in bench.servers:
            if server.proc is not None and server.proc.returncode is not None:
                log(f"{server.name} log tail:\n{server.log_tail()}")
    finally:
        await bench.cleanup()
    if bench.bench is not None:
        bench.profiles.update(bench.bench.profiles)
    report = bench.report(postgres)
    if bench.profiler is not None:
        report.notes.insert(0, "PROFILED RUN (py-spy sampling the server): numbers perturbed.")
        report.extra["profiles"] = {
            name: {"samples": f.samples, "self": f.self_top, "inclusive": f.inclusive_top}
            for name, f in bench.profiles.items()
        }
        for name, frames in bench.profiles.items():
            log(f"profile {name}:\n{frames.render(12)}")
        markdown = write_results(report, args.results_dir / "profiled", None)
        if failure is None:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    elif failure is not None:
        report.notes.insert(0, f"INCOMPLETE RUN: {failure!r}")
        log(f"partial results kept; server logs in {bench.workdir}")
        markdown = write_results(report, args.results_dir / "failed", None)
    else:
        shutil.rmtree(bench.workdir, ignore_errors=True)
        changed = _non_defaults(args)
        if changed:
            report.notes.insert(0, "Non-default settings: " + ", ".join(changed) + ".")
        readmes = [] if args.no_readme or changed else [BENCH_DIR / "README.md", README]
        markdown = write_results(report, args.results_dir, readmes)
    print(markdown)
    return 1 if failure is not None else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workers < 1 or args.concurrency < 1 or args.scale <= 0:
        print("--workers, --concurrency and --scale must be positive", file=sys.stderr)
        return 2
    if any("=" not in item for item in args.server_env):
        print("--server-env takes NAME=VALUE", file=sys.stderr)
        return 2
    return uvloop.run(run(args))
