"""The admin API's allow-list: caller ARNs against the named principals."""

from __future__ import annotations

import pytest

from sotto_server.logic.admin_callers import admitted, principal_of

ROLE = "arn:aws-us-gov:iam::123456789012:role/ops/SottoAdmin"


@pytest.mark.parametrize(
    "caller",
    [
        "arn:aws-us-gov:sts::123456789012:assumed-role/SottoAdmin/alice@agency.gov",
        "arn:aws-us-gov:iam::123456789012:role/ops/SottoAdmin",
    ],
)
def test_admin_admits_sessions_of_a_named_role(caller: str) -> None:
    assert admitted(caller, [ROLE])


@pytest.mark.parametrize(
    "caller",
    [
        "arn:aws-us-gov:sts::123456789012:assumed-role/SottoAdminX/s",  # another role
        "arn:aws-us-gov:sts::999999999999:assumed-role/SottoAdmin/s",  # another account
        "arn:aws:sts::123456789012:assumed-role/SottoAdmin/s",  # another partition
        "arn:aws-us-gov:iam::123456789012:user/SottoAdmin",  # a user of that name
        "arn:aws-us-gov:sts::123456789012:federated-user/SottoAdmin",
        "",
        None,
        "not an arn",
    ],
)
def test_admin_refuses_every_other_caller(caller: str | None) -> None:
    assert not admitted(caller, [ROLE])


def test_admin_admits_nobody_when_nobody_is_named() -> None:
    assert not admitted("arn:aws:iam::123456789012:user/local", [])


def test_users_and_root_match_exactly() -> None:
    user = "arn:aws:iam::123456789012:user/team/local"
    assert admitted(user, [user])
    assert not admitted("arn:aws:iam::123456789012:user/local", [user])
    assert principal_of("arn:aws:iam::123456789012:root") == ("aws", "123456789012", "root", "")
