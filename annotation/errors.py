"""Refused annotation requests: each carries the machine-readable ``code`` and HTTP ``status`` the API answers.

The API turns them into responses in one place (``annotation.api.exception_handler``); commands
print ``detail`` and exit non-zero.
"""

from __future__ import annotations


class AnnotationError(Exception):
    """A refused annotation request."""

    code = "error"
    status = 400
    field: str | None = None

    def __init__(self, detail: str, *, code: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code


class AnnotationNotFound(AnnotationError):
    code, status = "not_found", 404


class Conflict(AnnotationError):
    code, status = "conflict", 409


class InvalidInput(AnnotationError):
    """A field of the request is wrong; ``field`` names it."""

    code, status = "invalid", 400
    default_field = "request"

    def __init__(self, detail: str, *, field: str | None = None, code: str | None = None):
        super().__init__(detail, code=code)
        self.field = field or self.default_field


class InvalidFile(InvalidInput):
    """An uploaded file (prompts, an image archive) is wrong: ``line`` and ``file_field`` say where in it."""

    default_field = "file"

    def __init__(self, detail: str, *, field: str | None = None, line: int | None = None, file_field: str | None = None):
        super().__init__(detail, field=field)
        self.line, self.file_field = line, file_field


class InvalidAnswer(InvalidInput):
    """An annotator's answer (or a gold answer) does not fit its item."""

    default_field = "answer"


class InvalidRoundSpec(InvalidInput):
    """A round's settings or items are wrong."""

    default_field = "round"


class RateLimited(AnnotationError):
    code, status = "throttled", 429

    def __init__(self, detail: str, *, retry_after: float):
        super().__init__(detail)
        self.retry_after = retry_after
