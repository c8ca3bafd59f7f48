"""Files and locations: uploading and sending, finding and downloading.

The transfers themselves are ``client/files.py``; this part sends the
content that names an upload and fetches a received one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sotto.frames.answers_files import FilePolicyAnswer
from sotto.protocol.content import Location
from sotto.protocol.conversation import MessageTimers

from .. import files
from ..errors import MessagingError
from ..outbox import SentMessage
from ..store import StoredMessage
from .sending import Sending

__all__ = ["Attachments"]


class Attachments(Sending):
    """Sending files and locations; downloading a received file."""

    def file_policy(self) -> FilePolicyAnswer:
        """What this network allows: files, their size, locations (``file_policy``)."""
        return self._ask(FilePolicyAnswer, "file_policy")

    def send_file(
        self,
        target: str,
        path: Path,
        *,
        expires_s: int = 0,
        burn_s: int = 0,
        progress: files.Progress | None = None,
        on_part: Callable[[int], None] | None = None,
    ) -> SentMessage:
        """Encrypt and upload ``path`` (resuming a run that stopped), then send its File content."""
        cid = self.resolve(target)
        uploaded = files.upload_file(
            self._call, self._vault, cid, path, progress=progress, on_part=on_part
        )
        timers = MessageTimers(expires_in_ms=expires_s * 1000, burn_after_read_s=burn_s)
        sent = self.send(cid, uploaded.content, timers=timers, files=[uploaded.object_id])
        files.forget_upload(self._vault, cid, path)
        return sent

    def send_location(
        self,
        target: str,
        latitude_e7: int,
        longitude_e7: int,
        *,
        label: str = "",
        expires_s: int = 0,
        burn_s: int = 0,
    ) -> SentMessage:
        cid = self.resolve(target)
        if not self.file_policy()["location_allowed"]:
            raise MessagingError("this network does not allow sharing locations")
        timers = MessageTimers(expires_in_ms=expires_s * 1000, burn_after_read_s=burn_s)
        content = Location(latitude_e7, longitude_e7, 0, self._clock(), label)
        return self.send(cid, content, timers=timers)

    def attachment(self, message_id: str) -> tuple[str, StoredMessage]:
        """The conversation and stored message of a file message this device still holds."""
        for cid, record in self.state.conversations.items():
            for stored in record.history:
                if stored.message_id == message_id and stored.attachment is not None:
                    return cid, stored
        raise MessagingError(f"no file message {message_id} on this device")

    def download(
        self,
        message_id: str,
        directory: Path,
        *,
        name: str | None = None,
        progress: files.Progress | None = None,
    ) -> Path:
        """Fetch, verify and save a received file into ``directory`` (never over a file).

        ``name`` takes that exact name (refused if it exists); otherwise the
        sender's name, sanitised, with " (2)" and so on when taken.
        """
        cid, stored = self.attachment(message_id)
        delete_at = stored.delete_at()
        if delete_at is not None and delete_at <= self._clock():
            raise MessagingError("that message expired or burnt; its file is gone")
        assert stored.attachment is not None
        content = files.file_of(stored.attachment)
        staging = self.profile.path / "downloads"
        verified = files.download_file(
            self._call, cid, message_id, content, staging, progress=progress
        )
        chosen = name if name is not None else files.sanitise_name(content.name)
        try:
            return files.place_file(verified, directory, chosen, exact=name is not None)
        finally:
            verified.unlink(missing_ok=True)
