"""Which IAM principals the admin API admits.

API Gateway's IAM authorizer admits any principal of the account whose IAM
policy allows ``execute-api:Invoke`` on the route: too many, in an account
where broad policies are common. The admin function therefore admits only
the principals its deployment names (context ``admin_principals``), matched
against the caller ARN API Gateway passes (``requestContext.authorizer.iam.userArn``).

A role is named by its ARN (``arn:P:iam::A:role/path/Name``); its callers
arrive as sessions (``arn:P:sts::A:assumed-role/Name/session``), which carry
the role's name but not its path, so a session matches a role of that
partition, account and name. Users and the account root match exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["admitted", "principal_of"]

_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):(?P<service>iam|sts)::(?P<account>\d{12}):(?P<resource>.+)$"
)


def principal_of(arn: str) -> tuple[str, str, str, str] | None:
    """(partition, account, kind, name) of a caller or principal ARN; None if not one."""
    match = _ARN.match(arn)
    if match is None:
        return None
    partition, service, account, resource = match.group(
        "partition", "service", "account", "resource"
    )
    if service == "sts":
        kind, _, rest = resource.partition("/")
        role, _, session = rest.partition("/")
        return (
            (partition, account, "role", role)
            if kind == "assumed-role" and role and session
            else None
        )
    if resource == "root":
        return partition, account, "root", ""
    kind, _, path_and_name = resource.partition("/")
    if kind == "role" and path_and_name:
        return partition, account, "role", path_and_name.rsplit("/", 1)[-1]
    if kind == "user" and path_and_name:
        return partition, account, "user", path_and_name
    return None


def admitted(caller_arn: str | None, allowed: Iterable[str]) -> bool:
    """Whether the caller is one of the ``allowed`` principals (no wildcards, ever)."""
    caller = principal_of(caller_arn or "")
    return caller is not None and any(principal_of(arn) == caller for arn in allowed)
