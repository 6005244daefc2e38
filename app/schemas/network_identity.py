"""Request body of a verification by national network identity (网号/网证; never a table), and
the body of ``POST /v1/verifications``: either kind, told apart by ``id_type``.

No name, ID number or phone is required or accepted (``extra="forbid"``): the law's "minimal
provision" rule. The credential is the opaque result token of the platform's app flow.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from app.schemas.text import SafeStr
from app.schemas.verification import Consent, VerificationCreate


class NetworkIdentityCreate(BaseModel):
    """An end user who presents a national network identity credential instead of their
    identity data, with consent to the published collection rules."""

    model_config = ConfigDict(extra="forbid")

    id_type: Literal["cn_network_identity"]
    external_user_id: SafeStr = Field(
        min_length=1,
        max_length=200,
        description="Your id for the end user: never the person's ID number or phone number",
    )
    credential: SafeStr = Field(
        min_length=1,
        max_length=4096,
        description="The opaque result token your app received from the national app flow",
    )
    mode: Literal[
        "credential", "credential_password", "credential_face", "credential_password_face"
    ] = Field(description="网证, 网证+口令, 网证+人脸 or 网证+口令+人脸, as chosen in the app")
    consent: Consent
    level: Literal["L1", "L2", "L3"] | None = None


def _id_type(value: object) -> str | None:
    """Which body this is: its ``id_type``, ``cn_resident_id`` when absent."""
    if isinstance(value, dict):
        tag = value.get("id_type", "cn_resident_id")
        return tag if isinstance(tag, str) else None
    tag = getattr(value, "id_type", None)
    return tag if isinstance(tag, str) else None


#: The body of ``POST /v1/verifications``: resident ID fields, or a network identity credential.
VerificationRequest = Annotated[
    Annotated[VerificationCreate, Tag("cn_resident_id")]
    | Annotated[NetworkIdentityCreate, Tag("cn_network_identity")],
    Discriminator(_id_type),
]
