"""The development console sender."""

from __future__ import annotations

import io
import logging

import pytest

from app.senders.base import OutgoingSms, Sender, SendResult
from app.senders.console import ConsoleSender, mask_recipient

PHONE = "+8613912345678"
NATIONAL = "13912345678"
CODE = "482913"
MESSAGE = OutgoingSms(
    message_id="msg-5b8c0d1e",
    phone=PHONE,
    template="otp",
    params={"code": CODE},
    body=f"【实名认证】您的验证码是{CODE}，5分钟内有效。",
)


async def test_output_shows_masked_phone_and_code() -> None:
    """The line shows the masked phone and the body with the code."""
    stream = io.StringIO()

    await ConsoleSender(stream).send(MESSAGE)

    assert "to=139****5678" in stream.getvalue()
    assert MESSAGE.body in stream.getvalue()
    assert CODE in stream.getvalue()


async def test_output_hides_the_full_phone() -> None:
    """Neither the E.164 nor the national form of the phone number is written."""
    stream = io.StringIO()

    await ConsoleSender(stream).send(MESSAGE)

    assert PHONE not in stream.getvalue()
    assert NATIONAL not in stream.getvalue()


async def test_one_line_per_message() -> None:
    """Each send writes exactly one newline-terminated line."""
    stream = io.StringIO()
    sender = ConsoleSender(stream)

    await sender.send(MESSAGE)
    await sender.send(MESSAGE)

    lines = stream.getvalue().splitlines(keepends=True)
    assert len(lines) == 2
    assert all(line.endswith("\n") for line in lines)


async def test_control_characters_in_body_are_escaped() -> None:
    """Line breaks and terminal escapes in the body are shown escaped, keeping one line."""
    stream = io.StringIO()
    message = OutgoingSms("m-1", PHONE, "otp", {"code": CODE}, f"code:\n{CODE}\x1b[2J\u2028end")

    await ConsoleSender(stream).send(message)

    assert stream.getvalue().endswith(f"body=code:\\n{CODE}\\x1b[2J\\u2028end\n")
    assert len(stream.getvalue().splitlines()) == 1


async def test_send_reports_delivered() -> None:
    """Every message counts as delivered."""
    assert await ConsoleSender(io.StringIO()).send(MESSAGE) == SendResult(delivered=True)


async def test_nothing_goes_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    """Sending emits no log record at any level, so no OTP can reach the logs."""
    caplog.set_level(logging.DEBUG)

    await ConsoleSender(io.StringIO()).send(MESSAGE)

    assert caplog.records == []


async def test_defaults_to_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a stream, the line goes to sys.stdout as it is at send time."""
    await ConsoleSender().send(MESSAGE)

    captured = capsys.readouterr()
    assert "to=139****5678" in captured.out
    assert captured.err == ""


def test_is_a_sandbox_sender() -> None:
    """The sender satisfies the Sender protocol as the sandbox ``console`` plug-in."""
    sender = ConsoleSender(io.StringIO())

    assert isinstance(sender, Sender)
    assert (sender.name, sender.sandbox) == ("console", True)


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("+8613800138000", "138****8000"),
        ("+447911123456", "791****3456"),
        ("+12025550123", "202****0123"),
        ("138-0013-8000", "138****8000"),
        ("+1234", "****"),
        ("", "****"),
    ],
)
def test_mask_recipient(phone: str, masked: str) -> None:
    """Masks keep the national number's first 3 and last 4 digits; short numbers show none."""
    assert mask_recipient(phone) == masked
