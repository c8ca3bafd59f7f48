"""One-time codes people type: invites and device links.

A code carries 100 random bits in Crockford base32 (no I, L, O, U), grouped
for reading aloud. Only its SHA-256 is stored, so a leaked table yields no
usable code; the entropy makes a plain hash sufficient (no guessing to slow).
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["CODE_ALPHABET", "hash_code", "new_code", "normalize_code"]

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CODE_CHARS = 20  # 20 x 5 bits = 100 bits
# Letters people confuse are read as the digits they look like.
_CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0", "U": "V"})


def new_code() -> str:
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(_CODE_CHARS))
    return "-".join(chars[i : i + 4] for i in range(0, _CODE_CHARS, 4))


def normalize_code(code: str) -> str:
    return code.upper().replace("-", "").replace(" ", "").translate(_CONFUSABLE)


def hash_code(code: str) -> str:
    return hashlib.sha256(b"sotto-code-v1\x00" + normalize_code(code).encode()).hexdigest()
