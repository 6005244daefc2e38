"""The ``realname`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.logging import configure_logging
from app.settings import SERVE_ROLES, Settings, SettingsError, get_settings

logger = logging.getLogger("app.cli")


def _run_db(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``work(session)`` in one committed transaction."""
    from app.db import session_scope
    from app.runtime import build_runtime

    async def _main() -> Any:
        runtime = build_runtime(settings)
        try:
            async with session_scope(runtime.sessions) as session:
                return await work(session)
        finally:
            await runtime.close()

    return asyncio.run(_main())


def _run_with_runtime(settings: Settings, work: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    """Run ``work(session, runtime)`` in one committed transaction (after-commit hooks too)."""
    from app.db import session_scope
    from app.runtime import build_runtime

    async def _main() -> Any:
        runtime = build_runtime(settings)
        try:
            async with session_scope(runtime.sessions) as session:
                return await work(session, runtime)
        finally:
            await runtime.close()

    return asyncio.run(_main())


def _problem_exit(exc: Exception) -> int:
    """Print a refused command's stable code and reason; exit 2."""
    code, detail = getattr(exc, "code", "error"), getattr(exc, "detail", str(exc))
    print(json.dumps({"error": code, "detail": detail}), file=sys.stderr)
    return 2


def cmd_emergency(args: argparse.Namespace, settings: Settings) -> int:
    from app.errors import ProblemError
    from app.services import emergency

    async def work(session: Any, runtime: Any) -> Any:
        if args.action == "status":
            return [emergency.measure_json(m) for m in await emergency.in_force(session)]
        outcome = await emergency.act(
            session,
            action=args.action,
            reason_code=args.reason_code,
            client_id=args.client_id,
            provider=args.provider,
            known_providers=emergency.known_providers(runtime),
            settings=runtime.settings,
            actor_type="system",
            actor_id="cli",
        )
        return outcome.as_json()

    try:
        print(json.dumps(_run_with_runtime(settings, work), default=str))
    except ProblemError as exc:
        return _problem_exit(exc)
    return 0


def _utc(text: str) -> Any:
    from datetime import UTC, datetime

    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def cmd_incident_report(args: argparse.Namespace, settings: Settings) -> int:
    from app.models._types import utcnow
    from app.services import incident

    try:
        since = _utc(args.since)
        until = _utc(args.until) if args.until else utcnow()
    except ValueError:
        print("realname: --since/--until must be ISO 8601 times", file=sys.stderr)
        return 2
    if until <= since:
        print("realname: --until must be after --since", file=sys.stderr)
        return 2

    async def work(session: Any) -> dict[str, Any]:
        return await incident.build(session, since, until, settings.audit_checkpoint_seeds)

    report = _run_db(settings, work)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "incident-" + since.strftime("%Y%m%dT%H%M%SZ")
    paths = {"markdown": out / f"{stem}.md", "json": out / f"{stem}.json"}
    paths["markdown"].write_text(incident.to_markdown(report), "utf-8")
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(json.dumps({k: str(p) for k, p in paths.items()}))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from app import migrate, serving

    if args.role is not None:
        # The app is built by uvicorn (in each worker process) from the environment: --role
        # reaches it as the setting, over whatever REALNAME_SERVE_ROLE said.
        os.environ["REALNAME_SERVE_ROLE"] = args.role
    role = args.role or settings.serve_role
    logger.info("serving", extra={"role": role, "workers": args.workers})
    if settings.env == "dev":
        migrate.upgrade(settings)
    serving.run(
        "app.main:create_app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        # Forwarded headers only from REALNAME_TRUSTED_PROXIES (uvicorn would trust 127.0.0.1).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips,
        access_log=False,
    )
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from app import migrate

    migrate.upgrade(settings, args.revision)
    print(json.dumps({"migrated_to": args.revision}))
    return 0


def cmd_clients_create(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import clients

    async def work(session: Any) -> dict[str, str]:
        client, api_key = await clients.create_client(
            session, settings.master_key, name=args.name, mode=args.mode, default_level=args.level
        )
        return {
            "client_id": client.id,
            "name": client.name,
            "mode": client.mode,
            "api_key": api_key,
        }

    print(json.dumps(_run_db(settings, work)))
    return 0


def _operator() -> Any:
    """Who acts at the command line, for the audit trail: the operating-system login."""
    import getpass

    from app.services.client_keys import Actor

    try:
        login = getpass.getuser()
    except OSError:  # no login name (a container with an unnamed uid)
        login = "unknown"
    return Actor("operator", f"os:{login}"[:64])


def _key_json(key: Any) -> dict[str, Any]:
    from app.services.client_keys import key_state

    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "key_id": key.id,
        "client_id": key.client_id,
        "prefix": key.prefix,
        "state": key_state(key),
        "created_at": when(key.created_at),
        "last_used_at": when(key.last_used_at),
        "expires_at": when(key.expires_at),
        "revoked_at": when(key.revoked_at),
    }


def _run_key_change(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> int:
    """Run a client or key change; refusals (unknown id, wrong state) exit 2 with one line."""
    from app.errors import ProblemError
    from app.hotcache import EpochNotMoved

    try:
        print(json.dumps(_run_db(settings, work)))
    except ProblemError as exc:
        print(f"realname: {exc.detail}", file=sys.stderr)
        return 2
    except EpochNotMoved:
        print(
            "realname: done, but Redis could not be told: other processes may accept the key "
            f"for up to {settings.api_key_cache_seconds:g} s; run the command again",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_clients_list(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import client_keys

    async def work(session: Any) -> list[dict[str, Any]]:
        return [
            {
                "client_id": c.client.id,
                "name": c.client.name,
                "mode": c.client.mode,
                "disabled": c.client.disabled,
                "keys": [_key_json(k) for k in c.keys],
            }
            for c in await client_keys.list_clients(session)
        ]

    return _run_key_change(settings, work)


def cmd_clients_set_disabled(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import client_keys

    disabled = args.sub == "disable"

    async def work(session: Any) -> dict[str, Any]:
        client = await client_keys.set_disabled(
            session,
            args.client_id,
            disabled=disabled,
            actor=_operator(),
            reason_code=args.reason_code,
        )
        return {"client_id": client.id, "disabled": client.disabled}

    return _run_key_change(settings, work)


def cmd_clients_add_key(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import client_keys

    async def work(session: Any) -> dict[str, Any]:
        key, plain = await client_keys.add_key(
            session,
            settings.master_key,
            args.client_id,
            actor=_operator(),
            reason_code=args.reason_code,
        )
        return {**_key_json(key), "api_key": plain}

    return _run_key_change(settings, work)


def cmd_clients_revoke_key(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import client_keys

    async def work(session: Any) -> dict[str, Any]:
        revoked = await client_keys.revoke_key(
            session, args.key_id, actor=_operator(), reason_code=args.reason_code
        )
        out = {**_key_json(revoked.key), "usable_keys_left": revoked.usable_keys_left}
        if revoked.usable_keys_left == 0:
            out["warning"] = "this was the client's last working key: the client has stopped"
        return out

    return _run_key_change(settings, work)


def cmd_clients_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import client_keys

    overlap = args.overlap_hours
    if overlap is None:
        overlap = settings.api_key_rotation_overlap_hours

    async def work(session: Any) -> dict[str, Any]:
        rotated = await client_keys.rotate_key(
            session,
            settings.master_key,
            args.key_id,
            overlap_hours=overlap,
            actor=_operator(),
            reason_code=args.reason_code,
        )
        return {
            "previous": _key_json(rotated.previous),
            "key": {**_key_json(rotated.key), "api_key": rotated.plain},
        }

    return _run_key_change(settings, work)


def cmd_policies_publish(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import policies

    body = Path(args.file).read_text("utf-8")

    async def work(session: Any) -> dict[str, str]:
        policy = await policies.publish(session, args.version, body)
        return {"version": policy.version, "sha256": policy.sha256}

    try:
        print(json.dumps(_run_db(settings, work)))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import audit

    checkpoints: list[dict[str, Any]] = []
    for path in args.checkpoint or []:
        try:
            doc = json.loads(Path(path).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            print(f"realname: cannot read checkpoint {path}: {type(exc).__name__}", file=sys.stderr)
            return 2
        checkpoints.extend(doc if isinstance(doc, list) else [doc])
    public = audit.public_keys(settings.audit_checkpoint_seeds)

    async def work(session: Any) -> Any:
        return await audit.verify_chain(session, checkpoints=checkpoints, public_keys=public)

    report = _run_db(settings, work)
    print(
        json.dumps(
            {
                "ok": report.ok,
                "checked": report.checked,
                "checkpoints": report.checkpoints,
                "first_broken_seq": report.first_broken_seq,
                "chain": report.chain,
                "position": report.position,
                "problem": report.problem,
                "chains": report.chains,
            }
        )
    )
    return 0 if report.ok else 1


def cmd_audit_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import audit

    async def work(session: Any) -> dict[str, Any]:
        return await audit.checkpoint(session, settings.audit_checkpoint_seeds)

    text = json.dumps(_run_db(settings, work), indent=2) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, "utf-8")
    return 0


def cmd_audit_public_key(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import audit

    keys = audit.public_keys(settings.audit_checkpoint_seeds)
    print(json.dumps({str(v): audit.public_key_text(k) for v, k in sorted(keys.items())}))
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from app.runtime import build_runtime
    from app.worker import Worker

    async def _main() -> None:
        runtime = build_runtime(settings)
        runtime.worker = worker = Worker(runtime)
        try:
            if args.once:
                handled = await worker.run_until_idle(max_wait=0)
                print(json.dumps({"handled": handled}))
            else:
                logger.info("worker started")
                await worker.run_forever()
        finally:
            await runtime.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
    return 0


def cmd_mock_registry(args: argparse.Namespace, settings: Settings) -> int:
    from app.mock_registry_server import serve

    serve(args.host, args.port, args.people or settings.mock_people_file, args.token)
    return 0


def cmd_sink(args: argparse.Namespace, settings: Settings | None) -> int:
    from app.sink_server import serve

    serve(args.host, args.port)
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import keys

    async def work(session: Any) -> dict[str, str]:
        key = await keys.rotate(session, settings.master_key)
        return {"kid": key.kid}

    print(json.dumps(_run_db(settings, work)))
    return 0


def cmd_keys_generate(args: argparse.Namespace, settings: Settings | None) -> int:
    from app.keygen import env_fragment

    print(env_fragment(blind_index_version=args.blind_index_version), end="")
    return 0


def cmd_admins_create(args: argparse.Namespace, settings: Settings) -> int:
    from app.admin import auth

    password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("realname: give the password on standard input", file=sys.stderr)
        return 2

    async def work(session: Any) -> dict[str, Any]:
        from app.runtime import build_runtime

        runtime = build_runtime(settings)
        try:
            admin, secret = await auth.create_admin(
                session,
                runtime,
                username=args.username,
                password=password,
                role=args.role,
                with_totp=args.totp,
            )
        finally:
            await runtime.close()
        out: dict[str, Any] = {"admin_id": admin.id, "username": admin.username, "role": admin.role}
        if secret is not None:
            out["totp_secret"] = auth.b32(secret)
            out["totp_uri"] = auth.totp_uri(secret, admin.username)
        return out

    from sqlalchemy.exc import IntegrityError

    try:
        print(json.dumps(_run_db(settings, work)))
    except ValueError as exc:
        print(f"realname: {exc}", file=sys.stderr)
        return 2
    except IntegrityError:
        print(f"realname: an admin named {args.username!r} already exists", file=sys.stderr)
        return 2
    return 0


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import purge

    async def work(session: Any) -> dict[str, int]:
        return await purge.run(session, settings, dry_run=args.dry_run)

    print(json.dumps(_run_db(settings, work)))
    return 0


def cmd_reindex(args: argparse.Namespace, settings: Settings) -> int:
    from app.runtime import build_runtime
    from app.services import reindex

    async def _main() -> dict[str, Any]:
        runtime = build_runtime(settings)
        try:
            return (await reindex.run(runtime)).as_dict()
        finally:
            await runtime.close()

    print(json.dumps(asyncio.run(_main())))
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and not action.required
            and default not in (None, False, argparse.SUPPRESS)
            and "%(default)" not in text
        ):
            text += " (default: %(default)s)"
        return text


def _explain(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand's parser the formatter that names defaults."""
    parser.formatter_class = _HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _explain(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realname",
        description="Real-name identity verification service. "
        "Settings come from REALNAME_* environment variables (see README.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (migrates the database itself in dev)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument(
        "--role",
        choices=SERVE_ROLES,
        default=None,
        help="what to answer: all (the whole API) or tokens (introspection, revocation, JWKS, "
        "discovery, health, metrics; no worker); default: REALNAME_SERVE_ROLE, else all",
    )
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="bring the database schema up to date")
    mig.add_argument("--revision", default="head", help="Alembic revision to migrate to")
    mig.set_defaults(func=cmd_migrate)

    clients = sub.add_parser("clients", help="manage API clients").add_subparsers(
        dest="sub", required=True
    )
    create = clients.add_parser("create", help="create a client and print its API key once (JSON)")
    create.add_argument("--name", required=True, help="a name for people to recognise it by")
    create.add_argument(
        "--mode",
        choices=["test", "live"],
        required=True,
        help="test keys reach only the sandbox verifiers and inbox; live keys the real ones",
    )
    create.add_argument(
        "--level", choices=["L1", "L2", "L3"], default="L2", help="default (minimum) level"
    )
    create.set_defaults(func=cmd_clients_create)
    from app.services.client_keys import REASON_CODES

    reason = {"choices": REASON_CODES, "required": True, "help": "why (audited)"}
    listing = clients.add_parser("list", help="clients with their keys' prefixes and last use")
    listing.set_defaults(func=cmd_clients_list)
    for name, text in (
        ("disable", "disable a client: its keys stop at once, in every process"),
        ("enable", "enable a disabled client again"),
    ):
        toggle = clients.add_parser(name, help=text)
        toggle.add_argument("client_id")
        toggle.add_argument("--reason-code", **reason)  # type: ignore[arg-type]
        toggle.set_defaults(func=cmd_clients_set_disabled)
    add_key = clients.add_parser("add-key", help="another API key for a client, printed once")
    add_key.add_argument("client_id")
    add_key.add_argument("--reason-code", **reason)  # type: ignore[arg-type]
    add_key.set_defaults(func=cmd_clients_add_key)
    revoke_key = clients.add_parser("revoke-key", help="revoke an API key now, in every process")
    revoke_key.add_argument("key_id")
    revoke_key.add_argument("--reason-code", **reason)  # type: ignore[arg-type]
    revoke_key.set_defaults(func=cmd_clients_revoke_key)
    rotate_key = clients.add_parser(
        "rotate-key", help="a new key now; the old one works until the overlap ends"
    )
    rotate_key.add_argument("key_id")
    rotate_key.add_argument("--reason-code", **reason)  # type: ignore[arg-type]
    rotate_key.add_argument(
        "--overlap-hours",
        type=int,
        default=None,
        choices=range(0, 24 * 30 + 1),
        metavar="H",
        help="hours the old key keeps working (default REALNAME_API_KEY_ROTATION_OVERLAP_HOURS)",
    )
    rotate_key.set_defaults(func=cmd_clients_rotate_key)

    pol = sub.add_parser("policies", help="collection rules").add_subparsers(
        dest="sub", required=True
    )
    publish = pol.add_parser("publish", help="publish a new collection-rules version")
    publish.add_argument("--version", required=True, help="the version name, e.g. 2026-07")
    publish.add_argument("--file", required=True, help="the rules text (Markdown, UTF-8)")
    publish.set_defaults(func=cmd_policies_publish)

    worker = sub.add_parser("worker", help="run the outbox worker (checks, SMS sends)")
    worker.add_argument("--once", action="store_true", help="do the due jobs, then exit")
    worker.set_defaults(func=cmd_worker)

    mock = sub.add_parser("mock-registry", help="run the standalone mock ID registry")
    mock.add_argument("--host", default="127.0.0.1", help="address to listen on")
    mock.add_argument("--port", type=int, default=8090, help="TCP port to listen on")
    mock.add_argument(
        "--people",
        type=Path,
        default=None,
        help="JSON file of known people (default: REALNAME_MOCK_PEOPLE_FILE, else magic names)",
    )
    mock.add_argument("--token", default=None, help="require this bearer token (default: none)")
    mock.set_defaults(func=cmd_mock_registry)

    sink = sub.add_parser(
        "sink", help="staging only: accept SMS-gateway and webhook posts, list them"
    )
    sink.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sink.add_argument("--port", type=int, default=8025, help="TCP port to listen on")
    sink.set_defaults(func=cmd_sink, without_settings=True)

    adm = sub.add_parser("admins", help="admin accounts").add_subparsers(dest="sub", required=True)
    acreate = adm.add_parser("create", help="create an admin; the password is read from stdin")
    acreate.add_argument("--username", required=True, help="the name to sign in with")
    acreate.add_argument(
        "--role",
        choices=["reviewer", "auditor", "admin"],
        required=True,
        help="reviewer decides, auditor reads, admin also manages clients and keys",
    )
    acreate.add_argument("--totp", action="store_true", help="enrol TOTP; prints the secret once")
    acreate.set_defaults(func=cmd_admins_create)

    purge = sub.add_parser("purge", help="end stale unfinished verifications; drop expired codes")
    purge.add_argument(
        "--dry-run", action="store_true", help="report what would go; change nothing"
    )
    purge.set_defaults(func=cmd_purge)

    reidx = sub.add_parser(
        "reindex",
        help="move stored personal data to REALNAME_CRYPTO_SUITE while the service runs (JSON)",
    )
    reidx.set_defaults(func=cmd_reindex)

    keys = sub.add_parser("keys", help="token signing keys").add_subparsers(
        dest="sub", required=True
    )
    rotate = keys.add_parser(
        "rotate", help="make a new signing key active; the old stays published"
    )
    rotate.set_defaults(func=cmd_keys_rotate)
    generate = keys.add_parser(
        "generate", help="print fresh secrets for production as a .env fragment"
    )
    generate.add_argument(
        "--blind-index-version",
        type=int,
        default=1,
        help="version of the new blind-index key (append it to the current ones to rotate)",
    )
    generate.set_defaults(func=cmd_keys_generate, without_settings=True)

    emg = sub.add_parser(
        "emergency", help="Art. 25 emergency actions (works with the API down)"
    ).add_subparsers(dest="action", required=True)
    emg.add_parser("status", help="measures in force").set_defaults(func=cmd_emergency)
    for action, text in (
        ("suspend-issuance", "refuse new verifications and tokens (503 issuance_suspended)"),
        ("resume-issuance", "end a suspension"),
        ("revoke-tokens", "revoke every token issued until now"),
        ("quarantine-provider", "stop calling a verifier or sender"),
        ("release-provider", "end a quarantine"),
    ):
        one = emg.add_parser(action, help=text)
        one.add_argument("--reason-code", required=True, help="a documented reason code")
        if action.endswith("provider"):
            one.add_argument("--provider", required=True, help="verifier or sender name")
            one.set_defaults(client_id=None)
        else:
            one.add_argument("--client-id", default=None, help="one client only (default: all)")
            one.set_defaults(provider=None)
        one.set_defaults(func=cmd_emergency)

    inc = sub.add_parser("incident", help="incident handling").add_subparsers(
        dest="sub", required=True
    )
    rep = inc.add_parser("report", help="draft the incident notification (Markdown and JSON)")
    rep.add_argument("--since", required=True, help="start of the window (ISO 8601, UTC)")
    rep.add_argument("--until", default=None, help="end of the window (default: now)")
    rep.add_argument("--output-dir", default=".", help="where to write the two files")
    rep.set_defaults(func=cmd_incident_report)

    aud = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="sub", required=True)
    verify = aud.add_parser("verify", help="check the hash chain; non-zero exit on a break")
    verify.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help="a signed checkpoint (repeatable): events it covers must be unchanged",
    )
    verify.set_defaults(func=cmd_audit_verify)
    cp = aud.add_parser("checkpoint", help="print (or write) a signed checkpoint of the chain")
    cp.add_argument("--output", "-o", default=None, help="file to write (default: stdout)")
    cp.set_defaults(func=cmd_audit_checkpoint)
    pk = aud.add_parser("public-key", help="print the checkpoint signing public keys")
    pk.set_defaults(func=cmd_audit_public_key)
    _explain(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        build_parser().print_help()
        return 0
    args = build_parser().parse_args(argv)
    if getattr(args, "without_settings", False):  # works before anything is configured
        generated: int = args.func(args, None)
        return generated
    try:
        settings = get_settings()
    except SettingsError as exc:
        for line in str(exc).splitlines():
            print(f"realname: {line}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        # Name the settings and the rule only: the values may be secrets (database passwords).
        for error in exc.errors():
            field = "REALNAME_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"realname: {field}: {error['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json_lines=settings.log_json)
    result: int = args.func(args, settings)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
