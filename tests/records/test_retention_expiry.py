"""A retention key generation lasts at most 90 days: screens warn two weeks ahead, and once
it has expired clients refuse to send with a message that says why and who can fix it."""

from __future__ import annotations

import pytest

from sotto.client.encoding import b64e
from sotto.client.errors import MessagingError
from sotto.client.retention import RetentionNotice, fetch_retention, notice_text
from sotto.frames.answers_devices import RetentionFields
from sotto.protocol.retention import RETENTION_KEY_VALIDITY_MS, RetentionSecrets
from sotto.protocol.safety import IdentityTracker

NETWORK = "net-expiry"
DAY = 86_400_000
MADE = 1_800_000_000_000


def served(made: RetentionSecrets) -> RetentionFields:
    identity = made.identity(NETWORK)
    return {
        "network_id": NETWORK,
        "enabled": True,
        "years": 7,
        "officer_identity": b64e(identity.officer.serialize()),
        "certificate": b64e(identity.certificate.serialize()),
        "prekey": b64e(identity.prekey.serialize()),
    }


@pytest.fixture(scope="module")
def made() -> RetentionSecrets:
    return RetentionSecrets.create(NETWORK, "rtn-000000000001", now=MADE)


def test_the_notice_carries_the_key_expiry_and_warns_only_in_its_last_two_weeks(made) -> None:
    answer = served(made)
    expires = made.identity(NETWORK).expires_at
    assert expires <= MADE + RETENTION_KEY_VALIDITY_MS
    early = fetch_retention(lambda: answer, NETWORK, IdentityTracker(), now=MADE + DAY)[1]
    assert early.key_expires_at == expires
    assert "expires" not in notice_text(early, now=MADE + DAY)
    late = fetch_retention(lambda: answer, NETWORK, IdentityTracker(), now=expires - 3 * DAY)[1]
    text = notice_text(late, now=expires - 3 * DAY)
    assert "Data Retention Turned On" in text
    assert "expires on" in text
    assert "in 3 day(s)" in text
    assert "records officer rotates it" in text


def test_an_expired_key_is_refused_in_words_that_say_who_can_fix_it(made) -> None:
    expires = made.identity(NETWORK).expires_at
    with pytest.raises(MessagingError, match=r"retention key expired on .*rotates the key"):
        fetch_retention(lambda: served(made), NETWORK, IdentityTracker(), now=expires)


def test_a_key_that_fails_for_another_reason_is_not_called_expired(made) -> None:
    answer = served(made)
    other = RetentionSecrets.create(NETWORK, "rtn-000000000002", now=MADE)
    answer["officer_identity"] = b64e(other.identity(NETWORK).officer.serialize())
    expires = made.identity(NETWORK).expires_at
    with pytest.raises(MessagingError, match="does not verify") as raised:
        fetch_retention(lambda: answer, NETWORK, IdentityTracker(), now=expires)
    assert "expired" not in str(raised.value)


def test_a_notice_saved_before_expiry_was_known_still_loads() -> None:
    assert "expires" not in notice_text(RetentionNotice(NETWORK, True, 7, "ab", MADE), now=MADE)


def test_the_warning_counts_from_now_not_from_when_the_notice_was_saved(made) -> None:
    expires = made.identity(NETWORK).expires_at
    saved = fetch_retention(lambda: served(made), NETWORK, IdentityTracker(), now=MADE)[1]
    assert "expires" not in notice_text(saved, now=MADE)
    assert "in 1 day(s)" in notice_text(saved, now=expires - DAY - 1)
