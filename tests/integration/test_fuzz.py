"""A bounded fuzz run: schemathesis generates requests from the service's own
OpenAPI schema (valid and invalid bodies, parameters, headers) against a real
`rag serve` with the bundled model, and no response may be a 5xx.

CI runs ``RAG_FUZZ_EXAMPLES`` (default 8) examples per operation; the longer
local run is documented in docs/reliability.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.service import ServiceProcess, running

pytestmark = pytest.mark.slow

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")


@schemathesis.serializer("application/jsonl")
def _jsonl(ctx: Any, value: Any) -> bytes:
    """Golden questions are uploaded as JSON lines (the schema says: a string)."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else repr(value).encode()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    env = {
        "RAG_DATA_DIR": str(root / "data"),
        "RAG_LLM_N_CTX": "512",  # max_tokens up to 447: bounded generations
        "RAG_MAX_TOKENS": "16",
        "RAG_PARSE_TIMEOUT_S": "30",
    }
    with running("serve", env, root / "serve.log") as proc:
        yield proc


def test_fuzzing_the_openapi_schema_finds_no_server_error(service: ServiceProcess, tmp_path: Path) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    examples = int(os.environ.get("RAG_FUZZ_EXAMPLES", "8"))
    with service.client() as client:
        headers = dict(client.headers)
        # something to find: a collection with a document, so search/ask reach the model
        client.post("/v1/collections", json={"name": "fuzz"})
        client.post(
            "/v1/collections/fuzz/documents",
            files=[("files", ("fuzz.md", b"# Fuzz\n\nThe fuzz target answers questions about fuzzing.\n"))],
        )
        schema_doc = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(schema_doc)
    failures: list[str] = []
    calls = 0
    auth = {k: v for k, v in headers.items() if k.lower() == "authorization"}

    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            try:
                response = case.call(base_url=service.url, headers=auth, timeout=120)
            except (httpx.HTTPError, OSError) as exc:  # a dropped connection is a failure too
                failures.append(f"{case.method} {case.formatted_path}: {type(exc).__name__}: {exc}")
                return
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}\n"
                    f"  reproduce: {case.as_curl_command()}"
                )

        run()

    print(f"fuzz: {calls} requests over {len(schema_doc['paths'])} paths, {len(failures)} server errors")
    assert service.proc.poll() is None, service.log()
    assert not failures, "\n".join(failures[:20])
