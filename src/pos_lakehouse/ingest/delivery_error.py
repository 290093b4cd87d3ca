"""The one error a delivered file that cannot be ingested raises, with a machine-readable reason."""

from __future__ import annotations

_MAX_DETAIL = 1000


class DeliveryError(Exception):
    """A delivered file that cannot be ingested; `reason` is a machine-readable code."""

    def __init__(self, file: str, reason: str, detail: str):
        self.file = file
        self.reason = reason
        # Reader messages may quote whole rows of a hostile file; keep what is carried around small.
        if len(detail) > _MAX_DETAIL:
            detail = detail[:_MAX_DETAIL] + f"... ({len(detail) - _MAX_DETAIL} more characters cut)"
        self.detail = detail
        super().__init__(f"{file}: {reason}: {detail}")
