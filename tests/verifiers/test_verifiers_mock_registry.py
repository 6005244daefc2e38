"""The deterministic mock ID registry: lookup rules, the known-people fixture, the verifiers."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from app.identity import parse_id_number, parse_name, parse_phone
from app.verifiers.base import CheckOutcome, CheckResult, Subject
from app.verifiers.mock_registry import (
    DEFAULT_PEOPLE_PATH,
    MAGIC_NAMES,
    MOCK_PEOPLE_ENV,
    KnownPerson,
    MockCarrierVerifier,
    MockIdRegistryVerifier,
    MockPeopleError,
    RegistryAnswer,
    load_people,
    lookup,
    mock_request_id,
    to_check_result,
)

ID_NUMBER = "11010519491231002X"
PHONE = "+8613800138000"
# A person of the shipped default fixture.
WANG_ID, WANG_NAME, WANG_PHONE = "110101198001010010", "王建国", "+8613900001001"
# A person of the shipped default fixture whose phone is not given.
CHEN_ID, CHEN_NAME = "510104197506300047", "陈思远"

PEOPLE = load_people()


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def test_ordinary_identity_matches() -> None:
    """A well-formed identity that is not listed and has no magic name matches."""
    assert lookup("张三", ID_NUMBER, None, PEOPLE) is RegistryAnswer.MATCH
    assert lookup("张三", ID_NUMBER, PHONE, PEOPLE) is RegistryAnswer.MATCH


@pytest.mark.parametrize(("name", "entry"), MAGIC_NAMES.items())
def test_magic_name_decides_the_carrier_answer(name: str, entry: tuple[str, str]) -> None:
    """In the carrier check every magic name gives its documented answer."""
    assert lookup(name, ID_NUMBER, PHONE, PEOPLE) == entry[0]


@pytest.mark.parametrize("name", [n for n in MAGIC_NAMES if n != "号码不符"])
def test_magic_name_decides_the_registry_answer(name: str) -> None:
    """In the ID registry check every magic name but 号码不符 gives its documented answer."""
    assert lookup(name, ID_NUMBER, None, PEOPLE) == MAGIC_NAMES[name][0]


def test_phone_magic_name_is_ordinary_for_the_registry_check() -> None:
    """号码不符 concerns only the carrier check; the ID registry check matches."""
    assert lookup("号码不符", ID_NUMBER, None, PEOPLE) is RegistryAnswer.MATCH


def test_magic_names_reach_every_non_match_answer() -> None:
    """Each answer other than match can be produced by some magic name."""
    reachable = {RegistryAnswer(outcome) for outcome, _ in MAGIC_NAMES.values()}

    assert reachable == set(RegistryAnswer) - {RegistryAnswer.MATCH}


def test_magic_names_are_canonical_and_described() -> None:
    """Magic names are canonical NFC names and each has a human description for the README."""
    for name, (_, description) in MAGIC_NAMES.items():
        assert parse_name(name) == name
        assert unicodedata.is_normalized("NFC", name)
        assert description.endswith(".")


def test_magic_name_is_compared_after_canonicalisation() -> None:
    """Surrounding whitespace and non-NFC spelling do not hide a magic name."""
    compatibility_bu = "\uf967"  # CJK COMPATIBILITY IDEOGRAPH-F967, NFC: U+4E0D 不

    assert lookup(" 不一致\t", ID_NUMBER, None, PEOPLE) is RegistryAnswer.MISMATCH
    assert lookup(f"{compatibility_bu}一致", ID_NUMBER, None, PEOPLE) is RegistryAnswer.MISMATCH


def test_magic_name_beats_the_fixture() -> None:
    """A magic name decides even for a listed ID number."""
    assert lookup("服务异常", WANG_ID, None, PEOPLE) is RegistryAnswer.UNAVAILABLE


@pytest.mark.parametrize(
    ("name", "id_number", "phone"),
    [
        ("张三", "110105194912310021", None),  # wrong check character
        ("张三", "11010519491231002", None),  # 17 characters
        ("张三", "110105194913310021", None),  # month 13
        ("张三", "000000199001010018", None),  # province 00
        ("", ID_NUMBER, None),
        ("张3", ID_NUMBER, None),
        ("张三", ID_NUMBER, "12345"),
        ("张三", ID_NUMBER, ""),
        ("不一致", "110105194912310021", None),  # malformed input beats a magic name
    ],
)
def test_malformed_input_is_invalid_identity(name: str, id_number: str, phone: str | None) -> None:
    """What the identity parsers refuse is invalid_identity, never match."""
    assert lookup(name, id_number, phone, PEOPLE) is RegistryAnswer.INVALID_IDENTITY


def test_lowercase_x_is_canonicalised() -> None:
    """A lowercase check character x is the same ID number."""
    assert lookup("张三", ID_NUMBER.lower(), None, PEOPLE) is RegistryAnswer.MATCH


def test_default_fixture_people_are_valid_and_match() -> None:
    """Every shipped person has a valid ID number and matches their own name and phone."""
    assert len(PEOPLE) >= 2
    for number, person in PEOPLE.items():
        assert parse_id_number(number).value == number
        assert lookup(person.real_name, number, None, PEOPLE) is RegistryAnswer.MATCH
        phone = person.phone if person.phone is not None else PHONE
        assert parse_phone(phone) == phone
        assert lookup(person.real_name, number, phone, PEOPLE) is RegistryAnswer.MATCH


def test_listed_id_with_another_name_is_mismatch() -> None:
    """A listed ID number under another name is a mismatch, in both checks."""
    assert lookup("张三", WANG_ID, None, PEOPLE) is RegistryAnswer.MISMATCH
    assert lookup("张三", WANG_ID, WANG_PHONE, PEOPLE) is RegistryAnswer.MISMATCH


def test_listed_id_with_another_phone_is_phone_mismatch() -> None:
    """A listed person with another phone is phone_mismatch in the carrier check only."""
    assert lookup(WANG_NAME, WANG_ID, PHONE, PEOPLE) is RegistryAnswer.PHONE_MISMATCH
    assert lookup(WANG_NAME, WANG_ID, None, PEOPLE) is RegistryAnswer.MATCH


def test_listed_person_without_phone_matches_any_phone() -> None:
    """When the fixture gives no phone, any well-formed phone matches."""
    assert lookup(CHEN_NAME, CHEN_ID, PHONE, PEOPLE) is RegistryAnswer.MATCH


def test_integrator_file_extends_and_overrides_the_default(tmp_path: Path) -> None:
    """An extra file adds people and replaces default entries with the same ID number."""
    extra = _write(
        tmp_path / "people.json",
        {
            "_comment": "ignored",
            ID_NUMBER: {"real_name": "张三"},
            WANG_ID.lower(): {"real_name": "王新", "phone": "13800138000"},
        },
    )

    people = load_people(extra)

    assert people[ID_NUMBER] == KnownPerson("张三")
    assert people[WANG_ID] == KnownPerson("王新", "+8613800138000")
    assert CHEN_ID in people
    assert lookup("李四", ID_NUMBER, None, people) is RegistryAnswer.MISMATCH


def test_fixture_names_are_compared_in_nfc(tmp_path: Path) -> None:
    """A fixture name and a submitted name that differ only in normal form are the same."""
    decomposed = unicodedata.normalize("NFD", "Renée")
    people = load_people(_write(tmp_path / "p.json", {ID_NUMBER: {"real_name": decomposed}}))

    assert lookup("Renée", ID_NUMBER, None, people) is RegistryAnswer.MATCH


def test_environment_names_the_extra_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a path argument, $REALNAME_MOCK_PEOPLE_FILE names the extra file."""
    extra = _write(tmp_path / "env.json", {ID_NUMBER: {"real_name": "张三"}})
    monkeypatch.setenv(MOCK_PEOPLE_ENV, str(extra))

    assert ID_NUMBER in load_people()


def test_explicit_path_beats_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path given to load_people (or a verifier) wins over the environment variable."""
    monkeypatch.setenv(MOCK_PEOPLE_ENV, str(tmp_path / "missing.json"))
    extra = _write(tmp_path / "arg.json", {ID_NUMBER: {"real_name": "张三"}})

    verifier = MockIdRegistryVerifier(extra)

    assert verifier._people[ID_NUMBER] == KnownPerson("张三")


@pytest.mark.parametrize(
    "document",
    [
        ["not", "an", "object"],
        {ID_NUMBER: "张三"},
        {ID_NUMBER: {"name": "张三"}},
        {ID_NUMBER: {"real_name": "张三", "email": "x@example.com"}},
        {ID_NUMBER: {"real_name": 7}},
        {"110105194912310021": {"real_name": "张三"}},
        {ID_NUMBER: {"real_name": "张三", "phone": "12345"}},
        {ID_NUMBER: {"real_name": "张3"}},
    ],
)
def test_unusable_fixture_is_refused_without_echoing_it(tmp_path: Path, document: object) -> None:
    """A malformed fixture raises MockPeopleError naming the entry, not its personal data."""
    path = _write(tmp_path / "bad.json", document)

    with pytest.raises(MockPeopleError) as caught:
        load_people(path)

    message = str(caught.value)
    assert str(path) in message
    assert "110105" not in message
    assert "张" not in message


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", None], ids=["json", "utf8", "none"])
def test_unreadable_fixture_is_refused(tmp_path: Path, content: bytes | None) -> None:
    """Invalid JSON, non-UTF-8 bytes or a missing file raise MockPeopleError."""
    path = tmp_path / "people.json"
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(MockPeopleError, match=r"people\.json"):
        load_people(path)


def test_default_fixture_file_ships_with_the_package() -> None:
    """The default fixture sits next to the module, so package data includes it."""
    assert DEFAULT_PEOPLE_PATH.parent.name == "verifiers"
    assert DEFAULT_PEOPLE_PATH.suffix == ".json"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (RegistryAnswer.MATCH, CheckResult.passed(billable=True)),
        (RegistryAnswer.MISMATCH, CheckResult.failed("id_mismatch", billable=True)),
        (RegistryAnswer.NOT_FOUND, CheckResult.failed("id_not_found")),
        (RegistryAnswer.INVALID_IDENTITY, CheckResult.failed("invalid_identity")),
        (RegistryAnswer.PHONE_MISMATCH, CheckResult.failed("phone_mismatch", billable=True)),
        (RegistryAnswer.UNAVAILABLE, CheckResult.unavailable("registry_unavailable")),
        (RegistryAnswer.MAINTENANCE, CheckResult.unavailable("registry_maintenance")),
        (RegistryAnswer.QUOTA_EXCEEDED, CheckResult.unavailable("registry_quota_exceeded")),
    ],
)
def test_answer_maps_to_documented_check_result(
    answer: RegistryAnswer, expected: CheckResult
) -> None:
    """Each registry answer maps to its documented outcome, reason and billing."""
    assert to_check_result(answer) == expected


def test_only_match_passes() -> None:
    """No answer but match can produce passed."""
    passing = {a for a in RegistryAnswer if to_check_result(a).outcome is CheckOutcome.PASSED}

    assert passing == {RegistryAnswer.MATCH}


def test_request_id_is_stable_per_idempotency_key() -> None:
    """The same key and scope give the same request id; no key gives a fresh one each time."""
    assert mock_request_id("id_registry", "k") == mock_request_id("id_registry", "k")
    assert mock_request_id("id_registry", "k") != mock_request_id("carrier_3e", "k")
    assert mock_request_id("id_registry", None) != mock_request_id("id_registry", None)


async def test_carrier_verifier_sends_the_phone() -> None:
    """The in-process carrier verifier checks the phone against the fixture."""
    subject = Subject(WANG_NAME, WANG_ID, PHONE)

    registry = await MockIdRegistryVerifier().check(subject, attempt_key="k")
    carrier = await MockCarrierVerifier().check(subject, attempt_key="k")

    assert registry.outcome is CheckOutcome.PASSED
    assert carrier.reason == "phone_mismatch"


def test_verifier_refuses_both_path_and_people(tmp_path: Path) -> None:
    """Giving a fixture path and loaded people at once is a programming error."""
    with pytest.raises(ValueError, match="either"):
        MockCarrierVerifier(tmp_path / "p.json", people=PEOPLE)


def test_known_person_repr_is_redacted() -> None:
    """KnownPerson never prints its fields."""
    person = KnownPerson(WANG_NAME, WANG_PHONE)

    assert WANG_NAME not in repr(person)
    assert WANG_PHONE not in str(person)
