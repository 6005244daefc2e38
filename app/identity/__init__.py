"""Pure identity-field helpers: canonicalisation, validation, masking and blind indexes.

Nothing here touches a database, the network or a logger. Every parser canonicalises once and
then validates, raising :class:`InvalidField` whose ``detail`` never contains the input.
"""

from app.identity.errors import InvalidField
from app.identity.external_id import check_external_user_id
from app.identity.hashing import BlindIndex, BlindIndexer, hash_identity_input
from app.identity.id_number import IdNumber, parse_id_number
from app.identity.masking import mask_id_number, mask_name, mask_phone
from app.identity.name import parse_name
from app.identity.phone import parse_phone
from app.identity.subject import Subject

__all__ = [
    "BlindIndex",
    "BlindIndexer",
    "IdNumber",
    "InvalidField",
    "Subject",
    "check_external_user_id",
    "hash_identity_input",
    "mask_id_number",
    "mask_name",
    "mask_phone",
    "parse_id_number",
    "parse_name",
    "parse_phone",
]
