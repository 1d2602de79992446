"""AWS-shaped identifiers: access keys, secrets, unique ids, ARNs."""

from __future__ import annotations

import secrets
import string

_UPPER_ALNUM = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def access_key_id(temporary: bool = False) -> str:
    return ("ASIA" if temporary else "AKIA") + _random(_UPPER_ALNUM, 16)


def secret_access_key() -> str:
    return _random(_SECRET_ALPHABET, 40)


def session_token() -> str:
    return "FwoGZXIvYXdzE" + _random(string.ascii_letters + string.digits, 300)


def unique_id(prefix: str) -> str:
    """AIDA… users, AROA… roles, ANPA… managed policies."""
    return prefix + _random(_UPPER_ALNUM, 17)


def user_arn(account_id: str, name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{account_id}:user{path}{name}"


def role_arn(account_id: str, name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{account_id}:role{path}{name}"


def root_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:root"


def assumed_role_arn(account_id: str, role_name: str, session_name: str) -> str:
    return f"arn:aws:sts::{account_id}:assumed-role/{role_name}/{session_name}"


def policy_arn(account_id: str, name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{account_id}:policy{path}{name}"
