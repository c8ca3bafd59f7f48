"""Typed answers of the file routes (docs/api.md, Files).

| Request                  | Answer (each part)           |
| ------------------------ | ---------------------------- |
| ``file_policy``          | ``FilePolicyAnswer``         |
| ``file_upload_start``    | ``FileUploadStartedAnswer``  |
| ``file_upload_parts``    | ``FileUploadPartsPart``      |
| ``file_upload_complete`` | ``FileUploadCompletedAnswer``|
| ``file_upload_abort``    | ``FileUploadAbortedAnswer``  |
| ``file_download``        | ``FileDownloadAnswer``       |
"""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict

from .shapes import strict

__all__ = [
    "FileDownloadAnswer",
    "FilePolicyAnswer",
    "FileUploadAbortedAnswer",
    "FileUploadCompletedAnswer",
    "FileUploadPartsHeader",
    "FileUploadPartsPart",
    "FileUploadStartedAnswer",
    "HeldPart",
    "PartUrl",
]


class FilePolicyAnswer(TypedDict):
    action: Literal["file_policy"]
    id: str | None
    files_allowed: bool
    max_file_bytes: int
    location_allowed: bool


class FileUploadStartedAnswer(TypedDict):
    action: Literal["file_upload_started"]
    id: str | None
    object_id: str
    part_size: int
    part_count: int
    expires_at: int


class PartUrl(TypedDict):
    part: int
    url: str  # a presigned UploadPart URL


class HeldPart(TypedDict):
    """A part S3 already holds (asked for with ``held``: to resume)."""

    part: int
    etag: str
    size: int


class FileUploadPartsHeader(TypedDict):
    action: Literal["file_upload_parts"]
    id: str | None
    object_id: str
    part_size: int
    part_count: int
    url_expires_at: int


class FileUploadPartsPart(FileUploadPartsHeader):
    # ``part`` is the contract's part number; each URL names its upload part itself.
    part: NotRequired[int]
    final: NotRequired[bool]
    urls: list[PartUrl]
    held: list[HeldPart]


class FileUploadCompletedAnswer(TypedDict):
    action: Literal["file_upload_completed"]
    id: str | None
    object_id: str


class FileUploadAbortedAnswer(TypedDict):
    action: Literal["file_upload_aborted"]
    id: str | None


class FileDownloadAnswer(TypedDict):
    action: Literal["file_download"]
    id: str | None
    object_id: str
    size: int
    url: str  # a presigned GET URL
    url_expires_at: int


strict(
    FilePolicyAnswer,
    FileUploadStartedAnswer,
    PartUrl,
    HeldPart,
    FileUploadPartsHeader,
    FileUploadPartsPart,
    FileUploadCompletedAnswer,
    FileUploadAbortedAnswer,
    FileDownloadAnswer,
)
