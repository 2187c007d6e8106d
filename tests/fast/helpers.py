"""Helpers of the fast tier's tests."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

__all__ = ["sse_events", "upload"]


def upload(client: TestClient, collection: str, files: dict[str, str | bytes], **form: str) -> Any:
    """POST files (name -> content) to a collection; returns the response."""
    payload = [("files", (name, data if isinstance(data, bytes) else data.encode())) for name, data in files.items()]
    return client.post(f"/v1/collections/{collection}/documents", files=payload, data=form)


def sse_events(body: str) -> list[tuple[str | None, str]]:
    """(event, data) of each Server-Sent Event in ``body``; checks the framing:
    events end with a blank line, lines are 'event: ' or 'data: '."""
    import json  # noqa: F401  (callers parse data themselves)

    assert body.endswith("\n\n"), body[-80:]
    events: list[tuple[str | None, str]] = []
    for block in body[:-2].split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
            else:
                raise AssertionError(f"not an SSE line: {line!r}")
        events.append((name, "\n".join(data)))
    return events
