"""The deterministic mock ID registry and the two sandbox verifiers built on it.

The mock reproduces every outcome the real authorities give (Tencent Cloud FaceID
``IdCardVerification`` / ``PhoneVerification``, Alibaba Cloud ``Id2Meta`` / ``Mobile3Meta``)
from nothing but the submitted fields, so that test-mode clients and integrators can exercise
each path without a provider account and without being billed.

How an answer is decided (:func:`lookup`)
-----------------------------------------
1. The fields are canonicalised and validated with the project's identity parsers
   (:func:`app.identity.parse_name`, :func:`~app.identity.parse_id_number`,
   :func:`~app.identity.parse_phone`). Anything they refuse is ``invalid_identity``, as a real
   registry refuses a malformed ID number (Tencent -2/-3) whatever the name.
2. A *magic name* (:data:`MAGIC_NAMES`, compared after that canonicalisation, which includes
   Unicode NFC) decides the answer on its own. ``号码不符`` only concerns the carrier
   three-element check; the ID registry check treats it as an ordinary name.
3. The *known people* fixture (:func:`load_people`): for a listed ID number, another name is
   ``mismatch`` and, in the carrier check, another phone is ``phone_mismatch`` (when the
   fixture gives one).
4. Everything else matches.

The same logic serves the in-process verifiers below and the standalone HTTP server in
:mod:`app.mock_registry_server`; :class:`app.verifiers.http_registry.HttpIdRegistryVerifier`
talks to the latter.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Final

from app.identity import InvalidField, parse_id_number, parse_name, parse_phone
from app.verifiers.base import CheckOutcome, CheckResult, Subject

__all__ = [
    "DEFAULT_PEOPLE_PATH",
    "MAGIC_NAMES",
    "MOCK_PEOPLE_ENV",
    "KnownPerson",
    "MockCarrierVerifier",
    "MockIdRegistryVerifier",
    "MockPeopleError",
    "RegistryAnswer",
    "load_people",
    "lookup",
    "mock_request_id",
    "to_check_result",
]

#: The fixture of known people shipped with the package (fictional people, valid numbers).
DEFAULT_PEOPLE_PATH: Final = Path(__file__).with_name("mock_people.json")
#: Environment variable naming an integrator's own fixture file; it extends the default one.
MOCK_PEOPLE_ENV: Final = "REALNAME_MOCK_PEOPLE_FILE"


class RegistryAnswer(StrEnum):
    """Every answer the mock registry gives; the values are its wire format."""

    #: The fields belong together.
    MATCH = "match"
    #: Name and ID number do not belong together.
    MISMATCH = "mismatch"
    #: The registry holds no record for the ID number.
    NOT_FOUND = "not_found"
    #: The registry refuses the name, ID number or phone as malformed.
    INVALID_IDENTITY = "invalid_identity"
    #: The registry is down.
    UNAVAILABLE = "unavailable"
    #: The registry is being upgraded.
    MAINTENANCE = "maintenance"
    #: The daily verification limit has been reached.
    QUOTA_EXCEEDED = "quota_exceeded"
    #: Carrier three-element check only: the phone is not registered to this name and ID.
    PHONE_MISMATCH = "phone_mismatch"


#: The magic names: ``real_name`` -> (answer, what it simulates). A magic name decides the answer
#: of any well-formed request on its own, whatever the ID number and phone. The README's table is
#: generated from this constant; :func:`to_check_result` gives the resulting check outcome.
MAGIC_NAMES: Final[dict[str, tuple[str, str]]] = {
    "不一致": (
        RegistryAnswer.MISMATCH,
        "Name and ID number do not belong together (Tencent -1, Aliyun BizCode 2; billed).",
    ),
    "查无此人": (
        RegistryAnswer.NOT_FOUND,
        "The registry has no record of the ID number (Tencent -5, Aliyun BizCode 3; not billed).",
    ),
    "信息有误": (
        RegistryAnswer.INVALID_IDENTITY,
        "The registry refuses the name or ID number as invalid (Tencent -2/-3; not billed).",
    ),
    "服务异常": (
        RegistryAnswer.UNAVAILABLE,
        "The registry is down (Tencent -4/-11); the check may be retried later.",
    ),
    "系统维护": (
        RegistryAnswer.MAINTENANCE,
        "The registry is being upgraded (Tencent -6); the check may be retried later.",
    ),
    "超出限额": (
        RegistryAnswer.QUOTA_EXCEEDED,
        "The daily verification limit is reached (Tencent -7/-12); not worth retrying today.",
    ),
    "号码不符": (
        RegistryAnswer.PHONE_MISMATCH,
        "Carrier check: the phone is not registered to this name and ID number (Tencent "
        "PhoneVerification -4; billed). The ID registry check treats it as an ordinary name.",
    ),
}

# answer -> (outcome, reason, billable). Billing follows Tencent's result codes: only definite
# answers about a record that exists are billed (match, mismatch, phone mismatch).
_CHECK_RESULTS: Final[dict[RegistryAnswer, tuple[CheckOutcome, str | None, bool]]] = {
    RegistryAnswer.MATCH: (CheckOutcome.PASSED, None, True),
    RegistryAnswer.MISMATCH: (CheckOutcome.FAILED, "id_mismatch", True),
    RegistryAnswer.NOT_FOUND: (CheckOutcome.FAILED, "id_not_found", False),
    RegistryAnswer.INVALID_IDENTITY: (CheckOutcome.FAILED, "invalid_identity", False),
    RegistryAnswer.PHONE_MISMATCH: (CheckOutcome.FAILED, "phone_mismatch", True),
    RegistryAnswer.UNAVAILABLE: (CheckOutcome.UNAVAILABLE, "registry_unavailable", False),
    RegistryAnswer.MAINTENANCE: (CheckOutcome.UNAVAILABLE, "registry_maintenance", False),
    RegistryAnswer.QUOTA_EXCEEDED: (CheckOutcome.UNAVAILABLE, "registry_quota_exceeded", False),
}

# Namespace for request ids derived from idempotency keys (uuid5 of the scope and the key).
_REQUEST_ID_NAMESPACE: Final = uuid.UUID("3f6d3c4e-5b8a-4c1e-9a57-2d1e8f0b6a90")


class MockPeopleError(ValueError):
    """A known-people fixture file cannot be used.

    The message names the file and the entry's position, never an ID number, name or phone.
    """


@dataclass(frozen=True, slots=True)
class KnownPerson:
    """One entry of the known-people fixture: whom an ID number belongs to.

    Attributes:
        real_name: The canonical name registered for the ID number.
        phone: The canonical E.164 phone registered with the carrier, or ``None`` when the
            fixture does not say (then any well-formed phone matches).

    ``repr`` is redacted: fixture files written by integrators may hold real people.
    """

    real_name: str
    phone: str | None = None

    def __repr__(self) -> str:
        return "KnownPerson(<redacted>)"

    __str__ = __repr__


def lookup(
    real_name: str,
    id_number: str,
    phone: str | None,
    people: Mapping[str, KnownPerson],
) -> RegistryAnswer:
    """Answer one registry query, deterministically.

    Args:
        real_name: The submitted name; canonicalised here (NFC, trimmed; see
            :func:`app.identity.parse_name`).
        id_number: The submitted ID number; canonicalised here (uppercase ``X``, ...).
        phone: ``None`` for the ID registry (two-element) check; the submitted phone for the
            carrier three-element check.
        people: Known people by canonical ID number, usually from :func:`load_people`.

    Returns:
        The :class:`RegistryAnswer`, decided as the module docstring describes. Never
        :attr:`RegistryAnswer.MATCH` for input the identity parsers refuse.
    """
    carrier_check = phone is not None
    try:
        name = parse_name(real_name)
        number = parse_id_number(id_number).value
        canonical_phone = parse_phone(phone) if phone is not None else None
    except InvalidField:
        return RegistryAnswer.INVALID_IDENTITY
    magic = MAGIC_NAMES.get(name)
    if magic is not None:
        answer = RegistryAnswer(magic[0])
        if carrier_check or answer is not RegistryAnswer.PHONE_MISMATCH:
            return answer
    person = people.get(number)
    if person is None:
        return RegistryAnswer.MATCH
    if person.real_name != name:
        return RegistryAnswer.MISMATCH
    if carrier_check and person.phone is not None and person.phone != canonical_phone:
        return RegistryAnswer.PHONE_MISMATCH
    return RegistryAnswer.MATCH


def to_check_result(
    answer: RegistryAnswer, *, provider_reference: str | None = None
) -> CheckResult:
    """Map a registry answer to the :class:`CheckResult` a verifier returns.

    ====================  ===========  ===========================  ========
    answer                outcome      reason                       billable
    ====================  ===========  ===========================  ========
    ``match``             passed       --                           yes
    ``mismatch``          failed       ``id_mismatch``              yes
    ``not_found``         failed       ``id_not_found``             no
    ``invalid_identity``  failed       ``invalid_identity``         no
    ``phone_mismatch``    failed       ``phone_mismatch``           yes
    ``unavailable``       unavailable  ``registry_unavailable``     no
    ``maintenance``       unavailable  ``registry_maintenance``     no
    ``quota_exceeded``    unavailable  ``registry_quota_exceeded``  no
    ====================  ===========  ===========================  ========

    Args:
        answer: The registry's answer.
        provider_reference: The registry's request id, stored with the result.
    """
    outcome, reason, billable = _CHECK_RESULTS[answer]
    return CheckResult(outcome, reason, billable, provider_reference)


def mock_request_id(scope: str, idempotency_key: str | None) -> str:
    """The mock registry's request id for one query.

    Derived from the idempotency key when there is one (a UUID version 5), so a retried query
    gets the same reference, as from a provider that de-duplicates requests; a random UUID
    version 4 otherwise.

    Args:
        scope: The check type (``"id_registry"`` or ``"carrier_3e"``).
        idempotency_key: The caller's PII-free idempotency key (a verifier's ``attempt_key``).
    """
    if idempotency_key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, f"{scope}\x00{idempotency_key}"))


def load_people(path: Path | str | None = None) -> Mapping[str, KnownPerson]:
    """Load the known people: the default fixture, extended by an integrator's own file.

    The file is a JSON object mapping ID numbers to ``{"real_name": str, "phone": str | null}``
    (``phone`` optional); keys starting with ``_`` are ignored, so a ``"_comment"`` may explain
    the file. Entries of the extra file are added to the defaults and replace a default entry
    with the same ID number. Values are canonicalised with the identity parsers.

    Args:
        path: The integrator's file. When ``None``, the file named by the environment variable
            ``REALNAME_MOCK_PEOPLE_FILE`` (:data:`MOCK_PEOPLE_ENV`), if set and non-empty.

    Returns:
        A read-only mapping of canonical ID number to :class:`KnownPerson`.

    Raises:
        MockPeopleError: a file cannot be read or is not of the shape above.
    """
    people = _read_people(DEFAULT_PEOPLE_PATH)
    extra = path if path is not None else os.environ.get(MOCK_PEOPLE_ENV) or None
    if extra is not None:
        people.update(_read_people(Path(extra)))
    return MappingProxyType(people)


def _read_people(path: Path) -> dict[str, KnownPerson]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MockPeopleError(
            f"{path}: cannot read the known-people file: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise MockPeopleError(f"{path}: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MockPeopleError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(document, dict):
        raise MockPeopleError(f"{path}: the top level must be a JSON object")
    people: dict[str, KnownPerson] = {}
    for position, (key, entry) in enumerate(document.items(), start=1):
        if key.startswith("_"):
            continue
        number, person = _parse_entry(f"{path}: entry #{position}", key, entry)
        people[number] = person
    return people


def _parse_entry(where: str, key: str, entry: object) -> tuple[str, KnownPerson]:
    if not isinstance(entry, dict) or not entry.keys() <= {"real_name", "phone"}:
        raise MockPeopleError(f"{where}: must be an object with real_name and optional phone")
    real_name = entry.get("real_name")
    phone = entry.get("phone")
    if not isinstance(real_name, str) or not (phone is None or isinstance(phone, str)):
        raise MockPeopleError(f"{where}: real_name must be a string, phone a string or null")
    try:
        number = parse_id_number(key).value
        name = parse_name(real_name)
        canonical_phone = parse_phone(phone) if phone is not None else None
    except InvalidField as exc:
        raise MockPeopleError(f"{where}: {exc.detail}") from None
    return number, KnownPerson(real_name=name, phone=canonical_phone)


class _MockVerifier:
    """Shared body of the in-process mock verifiers."""

    name: ClassVar[str]
    check_type: ClassVar[str]
    sandbox: ClassVar[bool] = True
    #: Answers in process, without I/O: a registration may run it in its own transaction.
    inline: ClassVar[bool] = True
    _sends_phone: ClassVar[bool]

    def __init__(
        self,
        fixture_path: Path | str | None = None,
        *,
        people: Mapping[str, KnownPerson] | None = None,
    ) -> None:
        if fixture_path is not None and people is not None:
            raise ValueError("give either fixture_path or people, not both")
        self._people = people if people is not None else load_people(fixture_path)

    async def check(self, subject: Subject, *, attempt_key: str) -> CheckResult:
        """Answer from the mock registry; see :func:`lookup` and :func:`to_check_result`.

        The provider reference is derived from ``attempt_key``, so repeated calls with the same
        key return equal results.
        """
        answer = lookup(
            subject.real_name,
            subject.id_number,
            subject.phone if self._sends_phone else None,
            self._people,
        )
        return to_check_result(
            answer, provider_reference=mock_request_id(self.check_type, attempt_key)
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MockIdRegistryVerifier(_MockVerifier):
    """In-process mock of the ID registry (two-element: name + ID number) check.

    Args:
        fixture_path: An integrator's known-people file extending the default one; when
            ``None``, ``$REALNAME_MOCK_PEOPLE_FILE`` if set (see :func:`load_people`).
        people: Already-loaded known people to use instead (e.g. shared with a server).

    Raises:
        MockPeopleError: the fixture file cannot be used.
        ValueError: both ``fixture_path`` and ``people`` were given.
    """

    name: ClassVar[str] = "mock_id_registry"
    check_type: ClassVar[str] = "id_registry"
    _sends_phone: ClassVar[bool] = False


class MockCarrierVerifier(_MockVerifier):
    """In-process mock of the carrier three-element (name + ID number + phone) check.

    Constructed like :class:`MockIdRegistryVerifier`.
    """

    name: ClassVar[str] = "mock_carrier_3e"
    check_type: ClassVar[str] = "carrier_3e"
    _sends_phone: ClassVar[bool] = True
