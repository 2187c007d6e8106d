"""Wires the door into the app: the guards' order, the key authority, the
bootstrap key and the warnings at start."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api.auth import AuthMiddleware
from api.limits import BodyLimitMiddleware, OriginGuardMiddleware, install_cors
from rag.auth import KeyAuthority, load_or_create_secret
from rag.registry import Database
from rag.settings import Settings

__all__ = ["install_guards", "open_door"]

log = logging.getLogger(__name__)


def install_guards(app: FastAPI, settings: Settings) -> None:
    """Outermost first, as a request meets them: CORS (only with origins
    configured), the cross-site guard, authentication, the body limit."""
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_request_bytes, max_other_bytes=settings.max_json_bytes
    )
    app.add_middleware(AuthMiddleware, enabled=settings.auth_enabled, docs_open=settings.docs == "open")
    app.add_middleware(OriginGuardMiddleware, allowed_origins=settings.cors_origins)
    install_cors(app, settings.cors_origins)


def open_door(app: FastAPI, settings: Settings, registry: Database) -> None:
    """At start-up (blocking: call it in a thread): the key authority, and on the
    first start the bootstrap admin key."""
    if not settings.auth_enabled:
        app.state.auth = None
        log.warning(
            "authentication is OFF (RAG_AUTH_ENABLED=false): anyone who reaches this service may read, "
            "change and delete every collection; listening on %s",
            settings.bind_host,
        )
        return
    authority = KeyAuthority(
        registry, load_or_create_secret(settings.auth_secret, settings.data_dir), cache_s=settings.auth_cache_s
    )
    generated = authority.ensure_bootstrap(settings.bootstrap_admin_key)
    if generated is not None:
        log.warning(
            "first start: generated the admin API key %s (scope admin:*). It is shown only this once; "
            "create narrower keys with `rag keys create` or POST /v1/keys.",
            generated,
        )
    app.state.auth = authority
