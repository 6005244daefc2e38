"""Named crash points for fault tests.

When ``REALNAME_CRASH_AT`` names a point (and the service is not in prod), the process exits
abruptly the first time it reaches that point, as a power cut would. The points:

- ``committed POST /v1/verifications`` (and any other ``committed <METHOD> <route>``): right
  after a request's transaction commits, before the answer is sent;
- ``before_sms_send`` / ``after_sms_send``: around the sender call in the outbox worker, the
  latter before the job is marked done.
"""

from __future__ import annotations

import os
import sys

EXIT_CODE = 86


def reached(point: str) -> None:
    target = os.environ.get("REALNAME_CRASH_AT")
    if not target or target != point or os.environ.get("REALNAME_ENV") == "prod":
        return
    sys.stderr.write(f"realname: crashing at {point!r} (REALNAME_CRASH_AT)\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE)
