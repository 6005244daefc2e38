"""The scenarios, run against a live ``realname serve``; each returns raw numbers for the report.

Order matters: registrations make the people later scenarios need. L1 registrations end
``verified`` (tokens, introspection); L2 registrations end ``awaiting_code`` with a code in the
sandbox inbox (code check, then tokens too).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from bench import pgstats
from bench.cpu import CpuMeter, CpuShare
from bench.identities import People, registration_body
from bench.loadgen import Check, Outcome, Request, Target, closed_loop, encode_request, open_loop
from bench.pgstats import DbCost
from bench.profile import Frames, Profiler
from bench.stats import Summary, summarise
from bench.webhooks import webhook_delivery
from realname_sdk import TokenVerifier

_CODE = re.compile(r"(?<![0-9])([0-9]{6})(?![0-9])")
#: Connections of the admission-control curve (registration L1 past saturation).
ADMISSION_CONNECTIONS = (16, 64, 256)
#: What the service's refusals ask a client to wait (``Retry-After``), and the curve's clients do.
OVERLOADED_RETRY_AFTER = 1.0
#: How many of the newest tokens the introspection scenarios ask about.
INTROSPECTED_TOKENS = 1000
#: How many tokens the SDK's offline verification is timed on.
SDK_VERIFICATIONS = 3000


def status_is(expected: int) -> Check:
    def check(status: int, body: bytes) -> bool:
        return status == expected

    return check


def overloaded(status: int, body: bytes) -> bool:
    """A registration refused by admission control: load shed, not an error."""
    return status == 503 and b'"code":"overloaded"' in body


def status_and(expected: int, needle: bytes) -> Check:
    def check(status: int, body: bytes) -> bool:
        return status == expected and needle in body

    return check


@dataclass
class Measured:
    """A timed run: its summary, the CPU split while it ran, the database work per request,
    and the raw outcome."""

    summary: Summary
    cpu: CpuShare
    outcome: Outcome
    db: DbCost | None = None
    #: CPU milliseconds per operation where the bench itself does the work (SDK row).
    own_cpu_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary.as_dict(),
            "cpu": self.cpu.__dict__,
            "db": self.db.__dict__ if self.db else None,
            "own_cpu_ms": self.own_cpu_ms,
        }


def measured(outcome: Outcome, cpu: CpuShare, db: DbCost | None = None) -> Measured:
    summary = summarise(
        outcome.latencies,
        outcome.seconds,
        errors=outcome.errors,
        statuses=dict(outcome.statuses),
        error_samples=outcome.error_samples,
        shed_s=outcome.shed,
    )
    return Measured(summary, cpu, outcome, db)


@dataclass
class Durations:
    """Seconds of load per phase (scaled by ``--scale``)."""

    warmup: float = 3.0
    ceiling: float = 10.0
    registration: float = 20.0
    code_check_max: float = 30.0
    tokens: float = 15.0
    introspection: float = 15.0
    mixed_baseline: float = 10.0
    mixed: float = 20.0
    #: Each point of the admission-control curve.
    admission: float = 8.0

    def scaled(self, factor: float) -> Durations:
        return Durations(**{k: max(v * factor, 1.0) for k, v in self.__dict__.items()})


@dataclass
class Pools:
    """What the scenarios make for each other."""

    #: (api key, verification id) of verified verifications.
    verified: list[tuple[str, str]] = field(default_factory=list)
    #: verification id -> code, for L2 verifications awaiting their code.
    codes: dict[str, str] = field(default_factory=dict)
    #: (api key, service token).
    tokens: list[tuple[str, str]] = field(default_factory=list)
    #: Preparation problems (not timed, reported): name -> count.
    problems: dict[str, int] = field(default_factory=dict)
    #: Seconds after a registration run until its checks had finished (worker backlog), by level.
    drain_seconds: dict[str, float] = field(default_factory=dict)


class Bench:
    """Drives one ``realname serve`` (or the trivial app) at ``target``."""

    def __init__(
        self,
        target: Target,
        keys: dict[str, str],
        durations: Durations,
        *,
        concurrency: int = 64,
        registration_concurrency: int = 16,
        mixed_rate: float = 100.0,
        server_pid: int | None = None,
        people: People | None = None,
        profiler: Profiler | None = None,
        database_url: str | None = None,
        token_target: Target | None = None,
        token_pid: int | None = None,
    ) -> None:
        self.target = target
        #: A ``realname serve --role tokens`` beside the server: the introspection scenarios go
        #: there, as a load balancer would send ``/v1/tokens/*`` to it.
        self.token_target = token_target
        self.token_pid = token_pid
        self.keys = keys
        self.d = durations
        self.concurrency = concurrency
        self.registration_concurrency = registration_concurrency
        self.mixed_rate = mixed_rate
        self.server_pid = server_pid
        self.people = people or People()
        self.pools = Pools()
        self.profiler = profiler
        self.database_url = database_url
        self.database_name = database_url.rpartition("/")[2] if database_url else None
        #: Top frames of each profiled scenario (``--profile``).
        self.profiles: dict[str, Frames] = {}

    @property
    def server_pids(self) -> int | tuple[int, ...] | None:
        """The server processes whose CPU counts as the server's."""
        pids = tuple(p for p in (self.server_pid, self.token_pid) if p is not None)
        return pids or None

    # -- request building -------------------------------------------------------------------------
    def request(
        self, method: str, path: str, key: str | None, body: bytes | None = None, tag: object = None
    ) -> Request:
        headers = {"Authorization": f"Bearer {key}"} if key else None
        raw = encode_request(method, path, self.target.authority, headers=headers, body=body)
        return Request(raw, tag)

    def registrations(self, level: str, count: int) -> Iterator[Request]:
        """``count`` registrations of new people (built lazily: ~20 µs each)."""
        key = self.keys[level]
        for _ in range(count):
            body = registration_body(self.people.person(), level)
            yield self.request("POST", "/v1/verifications", key, body, tag=level)

    def _max_registrations(self, seconds: float, ceiling_rps: float) -> int:
        return int(seconds * ceiling_rps * 3) + 500

    async def _profile_start(self, name: str) -> None:
        if self.profiler is not None and self.server_pid is not None:
            await self.profiler.start(self.server_pid, name)

    async def _profile_stop(self, name: str) -> None:
        if self.profiler is not None:
            frames = await self.profiler.stop()
            if frames is not None:
                self.profiles[name] = frames

    async def _timed(self, name: str, run: Callable[[], Awaitable[Outcome]]) -> Measured:
        url = self.database_url
        fresh = pgstats.analyzing(url) if url else contextlib.nullcontext()
        async with fresh:
            before = await pgstats.snapshot(url) if url else None
            await self._profile_start(name)
            meter = CpuMeter(self.server_pids, self.database_name)
            try:
                outcome = await run()
                cpu = meter.share()
            finally:
                await self._profile_stop(name)
        cost = None
        if url and before is not None:
            await pgstats.settle()
            after = await pgstats.snapshot(url)
            cost = pgstats.per_request(before, after, outcome.errors + len(outcome.latencies))
        return measured(outcome, cpu, cost)

    async def _cycled(
        self,
        name: str,
        reqs: list[Request],
        check: Check,
        duration: float,
        *,
        keep_bodies: bool = False,
        target: Target | None = None,
    ) -> Measured:
        """Warm up on ``reqs`` (cycled, closed loop), then time ``duration`` of the same."""
        target = target or self.target
        await closed_loop(
            target,
            itertools.cycle(reqs),
            concurrency=self.concurrency,
            duration=self.d.warmup,
            check=check,
        )
        return await self._timed(
            name,
            lambda: closed_loop(
                target,
                itertools.cycle(reqs),
                concurrency=self.concurrency,
                duration=duration,
                check=check,
                keep_bodies=keep_bodies,
            ),
        )

    # -- ceilings ---------------------------------------------------------------------------------
    async def trivial(
        self, name: str, paths: list[str], *, method: str = "GET", expect: int = 200
    ) -> Measured:
        """Closed loop on the trivial app at the scenarios' concurrency, cycling ``paths``."""
        reqs = [self.request(method, p, None) for p in paths]
        return await self._cycled(name, reqs, status_is(expect), self.d.ceiling)

    # -- registration -----------------------------------------------------------------------------
    async def registration(self, level: str, ceiling_rps: float) -> Measured:
        """``POST /v1/verifications`` of new people at ``level`` (test mode), closed loop."""
        check = status_is(201)
        conc = self.registration_concurrency
        warm = await closed_loop(
            self.target,
            self.registrations(level, self._max_registrations(self.d.warmup, ceiling_rps)),
            concurrency=conc,
            duration=self.d.warmup,
            check=check,
            keep_bodies=True,
        )
        count = self._max_registrations(self.d.registration, ceiling_rps)
        result = await self._timed(
            f"registration_{level.lower()}",
            lambda: closed_loop(
                self.target,
                self.registrations(level, count),
                concurrency=conc,
                duration=self.d.registration,
                check=check,
                keep_bodies=True,
            ),
        )
        made = [_field(body, "id") for _, body in warm.kept + result.outcome.kept]
        began = time.monotonic()
        await self._collect(level, [v for v in made if v])
        self.pools.drain_seconds[level] = round(time.monotonic() - began, 1)
        return result

    async def admission(self, connections: int, ceiling_rps: float) -> Measured:
        """Registrations (L1) at ``connections`` connections, closed loop: past saturation the
        service sheds load (503 ``overloaded``), counted apart from accepted answers and
        errors; a shed connection waits the answer's ``Retry-After``, as the SDK does."""
        seconds = self.d.admission
        # Lazily built; shed requests use people up too (one per connection per Retry-After).
        per_second = ceiling_rps * 3 + connections / OVERLOADED_RETRY_AFTER
        count = int((self.d.warmup + seconds + 2) * per_second) + 500
        people = self.registrations("L1", count)

        def run(duration: float) -> Awaitable[Outcome]:
            return closed_loop(
                self.target,
                people,
                concurrency=connections,
                duration=duration,
                check=status_is(201),
                shed=overloaded,
                pause_after_shed=OVERLOADED_RETRY_AFTER,
            )

        await run(self.d.warmup)
        return await self._timed(f"registration_l1_{connections}_conns", lambda: run(seconds))

    async def _collect(self, level: str, ids: list[str]) -> None:
        """After registrations: L1 ones must reach verified, L2 ones a code in the inbox."""
        if level == "L1":
            await self._await_verified(ids)
        else:
            await self._await_codes(ids)

    async def _fetch(
        self, todo: list[str], path: Callable[[str], str], key: str
    ) -> dict[str, bytes]:
        reqs = [self.request("GET", path(v), key, tag=v) for v in todo]
        out = await closed_loop(
            self.target,
            iter(reqs),
            concurrency=16,
            duration=60,
            check=status_is(200),
            keep_bodies=True,
        )
        return {str(tag): body for tag, body in out.kept}

    async def _await_verified(self, ids: list[str], within: float = 60) -> None:
        key, todo = self.keys["L1"], list(ids)
        deadline = time.monotonic() + within
        while todo and time.monotonic() < deadline:
            bodies = await self._fetch(todo, lambda v: f"/v1/verifications/{v}", key)
            still: list[str] = []
            for vid in todo:
                status = _field(bodies.get(vid, b"{}"), "status")
                if status == "verified":
                    self.pools.verified.append((key, vid))
                elif status in (None, "pending"):
                    still.append(vid)
                else:
                    self._problem(f"L1 ended {status}")
            todo = still
            if todo:
                await asyncio.sleep(0.5)
        if todo:
            self._problem("L1 still pending after 60 s", len(todo))

    async def _await_codes(self, ids: list[str], within: float = 60) -> None:
        key, todo = self.keys["L2"], list(ids)
        deadline = time.monotonic() + within
        while todo and time.monotonic() < deadline:
            bodies = await self._fetch(
                todo, lambda v: f"/v1/sandbox/messages?verification_id={v}", key
            )
            still: list[str] = []
            for vid in todo:
                data = json.loads(bodies.get(vid, b"{}")).get("data") or []
                match = _CODE.search(data[0]["body"]) if data else None
                if match:
                    self.pools.codes[vid] = match.group(1)
                else:
                    still.append(vid)
            todo = still
            if todo:
                await asyncio.sleep(0.5)
        if todo:
            self._problem("L2 without a code after 60 s", len(todo))

    def _problem(self, what: str, count: int = 1) -> None:
        self.pools.problems[what] = self.pools.problems.get(what, 0) + count

    # -- code check -------------------------------------------------------------------------------
    async def code_check(self) -> Measured:
        """``POST /v1/verifications/{id}/sms-code`` with the right code, each code once."""
        key = self.keys["L2"]
        items = list(self.pools.codes.items())
        self.pools.codes.clear()
        reqs = [
            self.request(
                "POST",
                f"/v1/verifications/{vid}/sms-code",
                key,
                json.dumps({"code": code}).encode(),
                tag=vid,
            )
            for vid, code in items
        ]
        check = status_and(200, b'"status":"verified"')
        warm_n = min(len(reqs) // 10, self.concurrency * 4)
        warm = await closed_loop(
            self.target,
            iter(reqs[:warm_n]),
            concurrency=self.concurrency,
            duration=self.d.warmup,
            check=check,
            keep_bodies=True,
        )
        rest = iter(reqs[warm_n:])
        result = await self._timed(
            "code_check",
            lambda: closed_loop(
                self.target,
                rest,
                concurrency=self.concurrency,
                duration=self.d.code_check_max,
                check=check,
                keep_bodies=True,
            ),
        )
        for tag, _ in warm.kept + result.outcome.kept:
            self.pools.verified.append((key, str(tag)))
        return result

    # -- tokens -----------------------------------------------------------------------------------
    async def token_issue(self) -> Measured:
        """``POST /v1/verifications/{id}/tokens`` for verified verifications, cycled."""
        reqs = [
            self.request("POST", f"/v1/verifications/{vid}/tokens", key, tag=key)
            for key, vid in self.pools.verified
        ]
        if not reqs:
            raise RuntimeError("no verified verification to issue tokens for")
        result = await self._cycled(
            "token_issue", reqs, status_is(201), self.d.tokens, keep_bodies=True
        )
        for tag, body in result.outcome.kept[-5000:]:
            token = _field(body, "access_token")
            if token:
                self.pools.tokens.append((str(tag), token))
        return result

    def _introspections(self) -> list[Request]:
        """Introspections of the newest :data:`INTROSPECTED_TOKENS` tokens: a backend asks
        about the tokens of its users who are active now, each many times."""
        if not self.pools.tokens:
            raise RuntimeError("no token to introspect")
        return [
            self.request(
                "POST", "/v1/tokens/introspect", key, json.dumps({"token": token}).encode()
            )
            for key, token in self.pools.tokens[-INTROSPECTED_TOKENS:]
        ]

    async def introspection(self) -> Measured:
        """``POST /v1/tokens/introspect`` of live tokens, closed loop (the warm-up cycles
        through them several times, so each server process has seen most of them)."""
        reqs = self._introspections()
        check = status_and(200, b'"active":true')
        target = self.token_target or self.target
        # Each token over several connections: each server process sees most of them.
        await closed_loop(
            target,
            iter(reqs * 4),
            concurrency=self.concurrency,
            duration=self.d.introspection,
            check=check,
        )
        return await self._cycled("introspection", reqs, check, self.d.introspection, target=target)

    async def sdk_verification(self) -> Measured:
        """Offline verification in the SDK: ``TokenVerifier.verify`` with the JWKS fetched once
        and cached, in the bench process (one thread), over the issued tokens."""
        tokens = [token for _, token in self.pools.tokens[-SDK_VERIFICATIONS:]]
        if not tokens:
            raise RuntimeError("no token to verify")
        loop = asyncio.get_running_loop()
        meter = CpuMeter(self.server_pids, self.database_name)
        outcome, cpu_seconds = await loop.run_in_executor(None, verify_offline, self.target, tokens)
        result = measured(outcome, meter.share())
        if outcome.latencies:
            result.own_cpu_ms = round(1000 * cpu_seconds / len(outcome.latencies), 4)
        return result

    async def webhooks(self, seconds: float) -> Measured:
        """Revocations of L1's older tokens at ``mixed_rate``/s (open loop), each a
        ``token.revoked`` event delivered to a local receiver: events/s delivered, and the time
        from each event's commit to its arrival. Runs last: the tokens are gone afterwards."""
        key = self.keys["L1"]
        # Oldest first: the newest were introspected, but no scenario needs them any more.
        tokens = [token for k, token in self.pools.tokens if k == key]
        run, meter = await webhook_delivery(
            self.target,
            key,
            tokens,
            rate=self.mixed_rate,
            duration=seconds,
            server_pids=self.server_pids,
            database_name=self.database_name,
        )
        return measured(run.outcome, meter.share())

    # -- mixed ------------------------------------------------------------------------------------
    async def introspection_at_rate(self, seconds: float) -> Measured:
        """Introspection at ``mixed_rate`` requests/s (open loop), nothing else running."""
        reqs = self._introspections()
        check = status_and(200, b'"active":true')
        if self.token_target is not None:  # its caches have not seen these tokens yet
            await closed_loop(
                self.token_target,
                iter(reqs * 2),
                concurrency=16,
                duration=self.d.warmup,
                check=check,
            )
        return await self._timed(
            "introspection_unloaded",
            lambda: open_loop(
                self.token_target or self.target,
                itertools.cycle(reqs),
                rate=self.mixed_rate,
                duration=seconds,
                check=check,
                max_connections=self.concurrency,
            ),
        )

    async def mixed(self, ceiling_rps: float) -> tuple[Measured, Measured]:
        """Registrations (L1, closed loop) saturating hashing, and meanwhile introspection at
        ``mixed_rate`` (open loop). Returns (registrations, introspection)."""
        reg_check = status_is(201)
        conc = self.registration_concurrency
        await closed_loop(
            self.target,
            self.registrations("L1", self._max_registrations(self.d.warmup, ceiling_rps)),
            concurrency=conc,
            duration=self.d.warmup,
            check=reg_check,
        )
        reqs = self._introspections()
        count = self._max_registrations(self.d.mixed, ceiling_rps)
        await self._profile_start("mixed")
        meter = CpuMeter(self.server_pids, self.database_name)
        regs, intro = await asyncio.gather(
            closed_loop(
                self.target,
                self.registrations("L1", count),
                concurrency=conc,
                duration=self.d.mixed,
                check=reg_check,
            ),
            open_loop(
                self.token_target or self.target,
                itertools.cycle(reqs),
                rate=self.mixed_rate,
                duration=self.d.mixed,
                check=status_and(200, b'"active":true'),
                max_connections=self.concurrency,
            ),
        )
        cpu = meter.share()
        await self._profile_stop("mixed")
        return measured(regs, cpu), measured(intro, cpu)


def verify_offline(target: Target, tokens: list[str]) -> tuple[Outcome, float]:
    """Verify each token with a :class:`realname_sdk.TokenVerifier` for its audience (one per
    client, JWKS fetched before timing); the outcome and the thread's CPU seconds (what the
    verifications cost, however busy the machine is)."""
    base = f"http://{target.authority}"
    outcome = Outcome()
    with httpx.Client(timeout=10) as http:
        verifiers: dict[str, TokenVerifier] = {}
        for token in tokens:
            audience = str(jwt.decode(token, options={"verify_signature": False})["aud"])
            if audience not in verifiers:
                # The issuer from the metadata; the keys from this server (the bench does not
                # set the public URL the metadata's jwks_uri is built on).
                issuer = http.get(base + "/.well-known/oauth-authorization-server").json()
                verifiers[audience] = TokenVerifier(
                    base + "/.well-known/jwks.json",
                    audience=audience,
                    issuer=str(issuer["issuer"]),
                    http_client=http,
                )
                verifiers[audience].verify(token)  # fetches and caches the JWKS
        jobs = [
            (verifiers[str(jwt.decode(t, options={"verify_signature": False})["aud"])], t)
            for t in tokens
        ]
        began, cpu_began = time.perf_counter(), time.thread_time()
        for verifier, token in jobs:
            started = time.perf_counter()
            try:
                verifier.verify(token)
            except Exception as exc:  # counted, reported: any refusal is an error here
                outcome.statuses[type(exc).__name__] += 1
                outcome.error(type(exc).__name__)
                continue
            outcome.latencies.append(time.perf_counter() - started)
            outcome.statuses["verified"] += 1
        outcome.seconds = time.perf_counter() - began
        cpu_seconds = time.thread_time() - cpu_began
    return outcome, cpu_seconds


def _field(body: bytes, name: str) -> str | None:
    try:
        value = json.loads(body).get(name)
    except (ValueError, AttributeError):
        return None
    return str(value) if value is not None else None
