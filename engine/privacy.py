"""Masking of personal data: phone numbers and names never reach logs or timelines in clear."""

from __future__ import annotations

import hashlib


def mask_phone(phone: str) -> str:
    """``***`` and at most the last four digits: enough to tell two numbers apart in an audit,
    and not even the length of the number."""
    digits = [c for c in phone if c.isdigit()]
    return "***" + "".join(digits[-4:]) if len(digits) > 4 else "***"


def mask_name(name: str) -> str:
    """Keep the first character (the family name in Chinese), hide the rest."""
    if not name:
        return ""
    return name[0] + "*" * (len(name) - 1)


def normalize_phone(phone: str) -> str:
    """Digits only, without the +86 / 0086 country prefix, so lookups match however it was typed."""
    digits = "".join(c for c in phone if c.isdigit())
    if phone.strip().startswith("+86") or (digits.startswith("0086") and len(digits) > 12):
        digits = digits[2:] if phone.strip().startswith("+86") else digits[4:]
    return digits


def phone_digest(phone: str) -> str:
    """A short digest of a normalised number: two warnings about one phone (or one
    household, which shares it) meet under the same key, and the number is never stored."""
    return hashlib.blake2b(normalize_phone(phone).encode(), digest_size=8).hexdigest()
