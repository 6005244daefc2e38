"""A sender that prints messages to a text stream, for local development only.

:class:`ConsoleSender` lets a developer read the codes the service sends without an SMS account.
It is a sandbox sender (``sandbox = True``): nothing leaves the machine. It writes one line per
message to a text stream (standard output by default), for example ::

    [sms:console] message_id=3f2a… template=otp to=138****8000 body=您的验证码是123456

The body, and so the code, is printed in full: that is the purpose of this sender, and why it
must never be enabled for live traffic. The phone number is masked (the first 3 and last 4
digits of the national number), and nothing is passed to :mod:`logging`: log records are
collected and shipped, and must never carry an OTP.
"""

from __future__ import annotations

import sys
from typing import ClassVar, Final, TextIO

import phonenumbers

from app.senders.base import OutgoingSms, SendResult

__all__ = ["ConsoleSender", "mask_recipient"]

# National numbers shorter than this would be (nearly) fully shown by "first 3 + last 4".
_MIN_MASKABLE_DIGITS: Final = 8

# Control characters and line separators are shown escaped, so a message is always one line and
# cannot move the cursor or recolour the terminal.
_ONE_LINE: Final = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def mask_recipient(phone: str) -> str:
    """Mask a phone number for display: the national number's first 3 digits, ``****``, last 4.

    ``+8613800138000`` -> ``138****8000``. The country code is dropped. If ``phone`` cannot be
    parsed as an E.164 number, its ASCII digits are masked the same way; a number with fewer
    than 8 digits is shown as ``****`` only, so no input is ever shown in full.

    Args:
        phone: A phone number, normally E.164.

    Returns:
        The masked number.
    """
    try:
        national = str(phonenumbers.parse(phone, None).national_number)
    except phonenumbers.NumberParseException:
        national = "".join(c for c in phone if c.isascii() and c.isdigit())
    if len(national) < _MIN_MASKABLE_DIGITS:
        return "****"
    return f"{national[:3]}****{national[-4:]}"


class ConsoleSender:
    """Writes each message as one human-readable line to a text stream; for development only.

    See the module docstring for the format and what is (and is not) shown.

    Args:
        stream: Where lines are written. ``None`` (the default) means :data:`sys.stdout` as it
            is at the time of each send, so redirections made later are honoured.
    """

    name: ClassVar[str] = "console"
    sandbox: ClassVar[bool] = True

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, message: OutgoingSms) -> SendResult:
        """Write ``message`` as one line and flush the stream.

        Args:
            message: The SMS to show.

        Returns:
            ``SendResult(delivered=True)``.

        Raises:
            OSError: the stream cannot be written (the worker treats it as retriable).
            ValueError: the stream is closed.
        """
        stream = sys.stdout if self._stream is None else self._stream
        line = (
            f"[sms:console] message_id={message.message_id.translate(_ONE_LINE)}"
            f" template={message.template.translate(_ONE_LINE)}"
            f" to={mask_recipient(message.phone)}"
            f" body={message.body.translate(_ONE_LINE)}\n"
        )
        stream.write(line)
        stream.flush()
        return SendResult(delivered=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
