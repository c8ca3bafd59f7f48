"""Profiles and the keystore on disk: SOTTO_HOME, permissions, and clear errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from sotto.client.errors import PassphraseError, ProfileError, UsageError
from sotto.client.profile import (
    Profile,
    check_profile_name,
    list_profiles,
    read_passphrase,
    sotto_home,
)
from sotto.protocol.errors import CorruptKeystore, WrongPassphrase

from .conftest import PASSPHRASE, RunCli
from .helpers import make_profile


def test_sotto_home_prefers_sotto_home_then_xdg_then_dot_config() -> None:
    assert sotto_home({"SOTTO_HOME": "/x/home", "XDG_CONFIG_HOME": "/x/xdg"}) == Path("/x/home")
    assert sotto_home({"XDG_CONFIG_HOME": "/x/xdg"}) == Path("/x/xdg/sotto")
    assert sotto_home({}) == Path.home() / ".config" / "sotto"


def test_profile_keeps_device_and_identity_keys_across_save_and_load(home: Path) -> None:
    _profile, info, keys = make_profile(home)
    loaded = Profile.open("alice", home)
    assert loaded.read_info() == info
    opened = loaded.load_keys(PASSPHRASE)
    assert opened.device.serialize() == keys.device.serialize()
    assert opened.identity is not None
    assert keys.identity is not None
    assert opened.identity.private_bytes() == keys.identity.private_bytes()
    assert list_profiles(home) == ["alice"]


def test_profile_files_are_private_to_the_user(home: Path) -> None:
    profile, _, _ = make_profile(home)
    assert stat.S_IMODE(profile.keystore_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(profile.info_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(profile.path.stat().st_mode) == 0o700


def test_keystore_with_wrong_passphrase_is_refused_as_such(home: Path) -> None:
    profile, _, _ = make_profile(home)
    with pytest.raises(WrongPassphrase):
        profile.load_keys("not the passphrase")


def test_truncated_keystore_is_reported_corrupt(home: Path) -> None:
    profile, _, _ = make_profile(home)
    data = profile.keystore_path.read_bytes()
    profile.keystore_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptKeystore):
        Profile.open(profile.name, home).load_keys(PASSPHRASE)  # a new process opens it


def test_unknown_profile_is_named_in_the_error(home: Path) -> None:
    with pytest.raises(ProfileError, match="no profile named 'bob'"):
        Profile.open("bob", home)


def test_creating_an_existing_profile_is_refused(home: Path) -> None:
    make_profile(home)
    with pytest.raises(ProfileError, match="already exists"), Profile.create("alice", home):
        pass


def test_failed_creation_leaves_no_directory_unless_kept(home: Path) -> None:
    with pytest.raises(RuntimeError), Profile.create("bob", home):
        raise RuntimeError("server said no")
    assert not (home / "bob").exists()

    def fail_after_the_server_may_know_the_device() -> None:
        with Profile.create("carol", home) as profile:
            profile.keep = True
            raise RuntimeError("no answer")

    with pytest.raises(RuntimeError):
        fail_after_the_server_may_know_the_device()
    assert (home / "carol").is_dir()


def test_damaged_profile_json_is_reported_not_raised(home: Path) -> None:
    profile, _, _ = make_profile(home)
    profile.info_path.write_text("{not json")
    with pytest.raises(ProfileError, match="damaged"):
        profile.read_info()


@pytest.mark.parametrize("name", ["", "a/b", "..", "x" * 65, "sp ace"])
def test_profile_names_outside_the_identifier_alphabet_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError):
        check_profile_name(name)


def test_passphrase_comes_from_the_environment_without_a_prompt() -> None:
    def no_prompt(_: str) -> str:
        raise AssertionError("prompted")

    assert (
        read_passphrase(confirm=True, environ={"SOTTO_PASSPHRASE": "from-env-1"}, prompt=no_prompt)
        == "from-env-1"
    )


def test_passphrase_prompt_asks_twice_on_creation_and_refuses_a_mismatch() -> None:
    answers = iter(["first-passphrase", "second-passphrase"])
    with pytest.raises(PassphraseError, match="differ"):
        read_passphrase(confirm=True, environ={}, prompt=lambda _: next(answers))


def test_short_passphrase_is_refused_before_anything_is_created() -> None:
    with pytest.raises(PassphraseError, match="at least 8"):
        read_passphrase(confirm=True, environ={"SOTTO_PASSPHRASE": "short"})


def test_missing_terminal_gives_a_hint_instead_of_a_traceback() -> None:
    def eof(_: str) -> str:
        raise EOFError

    with pytest.raises(PassphraseError, match="SOTTO_PASSPHRASE"):
        read_passphrase(confirm=False, environ={}, prompt=eof)


# -- the same errors through the CLI: one line on stderr, exit 1, no traceback --------------


def test_cli_reports_wrong_passphrase(
    home: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_profile(home)
    monkeypatch.setenv("SOTTO_PASSPHRASE", "not the passphrase")
    result = run_cli("keys", "status", "--profile", "alice")
    assert result.code == 1
    assert result.err == "sotto: wrong passphrase\n"


def test_cli_reports_corrupt_keystore(home: Path, run_cli: RunCli) -> None:
    profile, _, _ = make_profile(home)
    profile.keystore_path.write_bytes(b"\x00" * 10)
    result = run_cli("devices", "--profile", "alice")
    assert result.code == 1
    assert "corrupt" in result.err
    assert "Traceback" not in result.err


def test_cli_reports_keystore_readable_by_others(home: Path, run_cli: RunCli) -> None:
    profile, _, _ = make_profile(home)
    profile.keystore_path.chmod(0o644)
    result = run_cli("keys", "status", "--profile", "alice")
    assert result.code == 1
    assert "chmod 600" in result.err


def test_cli_reports_unknown_profile(home: Path, run_cli: RunCli) -> None:
    result = run_cli("whoami", "--profile", "nobody")
    assert result.code == 1
    assert "no profile named 'nobody'" in result.err


def test_cli_whoami_needs_no_passphrase_and_prints_no_secrets(
    home: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, info, _ = make_profile(home)
    monkeypatch.delenv("SOTTO_PASSPHRASE")
    result = run_cli("whoami", "--profile", "alice", "--json")
    assert result.code == 0
    assert '"device_id": "dev-1"' in result.out
    assert info.identity_key is not None
    assert info.identity_key not in result.out


def test_one_key_derivation_per_process_and_the_state_files_are_sealed(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, _, keys = make_profile(home)
    derived = []
    original = Argon2id.derive

    def counting(self: Argon2id, data: bytes) -> bytes:
        derived.append(1)
        return original(self, data)

    monkeypatch.setattr(Argon2id, "derive", counting)
    again = Profile.open(profile.name, home)
    for _ in range(3):
        loaded = again.load_keys(PASSPHRASE)
        again.save_keys(loaded, PASSPHRASE)
    assert len(derived) == 1
    assert loaded.device.serialize() == keys.device.serialize()
    state = profile.path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert keys.device.device_id.encode() not in path.read_bytes()  # sealed, not plain


def test_a_state_file_swapped_for_another_is_refused(home: Path) -> None:
    profile, _, _ = make_profile(home)
    vault = Profile.open(profile.name, home).unlock(PASSPHRASE)
    vault.write("conv-a", b"one conversation")
    vault.write("conv-b", b"another")
    (profile.path / "state" / "conv-a").write_bytes(
        (profile.path / "state" / "conv-b").read_bytes()
    )
    with pytest.raises(CorruptKeystore, match="conv-a"):
        vault.read("conv-a")


def test_a_keystore_of_the_earlier_format_moves_into_the_vault(home: Path) -> None:
    from sotto import keystore as keystore_file
    from sotto.protocol.device import DeviceSecrets
    from sotto.protocol.keys import IdentityKeyPair

    identity = IdentityKeyPair.generate()
    device = DeviceSecrets.create(identity, "usr-1", "dev-1", now=1_700_000_000_000)
    (home / "old").mkdir(parents=True, mode=0o700)
    keystore_file.save(
        home / "old" / "keystore",
        {
            "device": device.serialize(),
            "identity": identity.private_bytes(),
            "published_through": (7).to_bytes(4, "big"),
        },
        PASSPHRASE,
    )
    profile = Profile("old", home)
    keys = profile.load_keys(PASSPHRASE)
    assert keys.device.serialize() == device.serialize()
    assert keys.published_through == 7
    assert keys.identity is not None
    reopened = Profile("old", home).load_keys(PASSPHRASE)  # the new format, from a new process
    assert reopened.device.serialize() == device.serialize()
