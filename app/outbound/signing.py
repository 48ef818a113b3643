"""Endpoint signing secrets: made, kept encrypted at rest, and used to sign.

The secrets are HMAC keys, so they must be usable, not only checkable: they are stored
encrypted with a key derived from OUTBOUND_SECRETS_KEY (Fernet: AES-CBC with an HMAC), and
a database dump alone reveals none of them. Signatures are made by the `standardwebhooks`
library, the reference implementation of the specification receivers verify against.
"""

import base64
import secrets
from datetime import datetime

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr
from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix the specification gives secrets
SECRET_BYTES = 32  # the specification asks for 24 to 64 random bytes


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class SecretBox:
    """Encrypts and decrypts endpoint secrets with the service's OUTBOUND_SECRETS_KEY."""

    def __init__(self, key: SecretStr) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"seedance-bff outbound secrets"
        ).derive(key.get_secret_value().encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        return self._fernet.decrypt(sealed.encode()).decode()


def signature_header(signing_secrets: list[str], msg_id: str, at: datetime, body: str) -> str:
    """The `webhook-signature` value: one `v1,<base64>` per secret, space-separated, so a
    receiver holding either the old or the new secret verifies during a rotation."""
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in signing_secrets)
