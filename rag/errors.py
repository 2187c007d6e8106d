"""The project's exception tree.

Every error that crosses a layer boundary is one of these. Library errors are
wrapped here with ``raise ... from exc`` so the cause is kept; the HTTP layer maps
each class to a status code in one place (``api/errors.py``).

    RagError
    ├── ConfigurationError        settings that cannot work together
    ├── NotFoundError             unknown collection / document / job
    ├── AlreadyExistsError        duplicate collection name
    ├── ConflictError             the resource is busy (a re-index already running)
    ├── AuthenticationError       no API key, or not a valid one
    ├── PermissionDeniedError     a valid key without the role this needs
    ├── InvalidRequestError       well-formed but unacceptable input
    │   ├── UnsupportedFileTypeError
    │   ├── FileTooLargeError
    │   └── RequestTooLargeError  too many files, or a body over the request limit
    ├── DocumentParseError        a file that could not be parsed (ingest)
    │   └── ParseLimitError       … because it hit a parsing limit (time, memory, size…)
    ├── ParseCancelledError       a parse stopped because its document was deleted
    ├── BusyError                 generation queue full; retry later
    └── BackendError              an outside system failed (Qdrant, DB, model…)
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "BackendError",
    "BusyError",
    "ConfigurationError",
    "ConflictError",
    "DocumentParseError",
    "FileTooLargeError",
    "InvalidRequestError",
    "NotFoundError",
    "ParseCancelledError",
    "ParseLimitError",
    "PermissionDeniedError",
    "RagError",
    "RequestTooLargeError",
    "UnsupportedFileTypeError",
]


class RagError(Exception):
    """Base class of every error raised on purpose by this project."""

    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(RagError):
    code = "configuration_error"


class NotFoundError(RagError):
    code = "not_found"


class AlreadyExistsError(RagError):
    code = "already_exists"


class ConflictError(RagError):
    code = "conflict"


class AuthenticationError(RagError):
    code = "unauthorized"


class PermissionDeniedError(RagError):
    code = "forbidden"


class InvalidRequestError(RagError):
    code = "invalid_request"


class UnsupportedFileTypeError(InvalidRequestError):
    code = "unsupported_file_type"


class FileTooLargeError(InvalidRequestError):
    code = "file_too_large"


class RequestTooLargeError(InvalidRequestError):
    code = "request_too_large"


class DocumentParseError(RagError):
    code = "parse_error"


class ParseLimitError(DocumentParseError):
    """``limit`` names the limit: time, memory, decompressed_size,
    compression_ratio, elements or text_size."""

    code = "parse_limit"

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class ParseCancelledError(RagError):
    code = "cancelled"


class BusyError(RagError):
    code = "busy"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendError(RagError):
    code = "backend_error"
