"""The rules studio's web layer: a Starlette app over the logic core (docs/studio.md, "The web layer").

State lives here, server-side, one sheet per launch: the sheet as opened (`save.OpenedSheet`), the model being
edited (`sheet_model.SheetModel`), the sample's `AudiencePreview` and suggestions, and the stack's published
rules. Every answer that changes something returns the whole state (`GET /api/state`'s document), so the page
only renders what the server computed; no checking or preview logic runs in the browser.

Security, for a local tool that can deploy (each point tested in tests/unit/studio/test_app.py):

- `HostGuard`: the Host header must be exactly `127.0.0.1:PORT` or `localhost:PORT` (the bound port; or the
  bound address when `--allow-remote` bound another), else 400 — a page on another site that rebinds its DNS
  name to 127.0.0.1 sends its own name as Host;
- every POST carries the per-launch token (in the page's `<meta name="csrf-token">`) in `X-CSRF-Token` and is
  `Content-Type: application/json` (which a cross-site form cannot send without a CORS preflight), else 403;
  GET requests change nothing;
- answers carry `Content-Security-Policy: default-src 'self'; frame-ancestors 'none'` (the script is a static
  file, nothing inline), `X-Frame-Options: DENY`, `Cache-Control: no-store`, `X-Content-Type-Options: nosniff`;
- the only file written is the sheet opened at launch (`save.save_sheet` refuses any other path, and a file
  changed on disk since it was opened); the request never names a path.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cli.studio.diff import diff_rules
from cli.studio.preview import AudiencePreview, EventSample
from cli.studio.save import OpenedSheet, SaveRefused, open_sheet, save_sheet
from functions.rules.sheet import MAX_SHEET_BYTES
from cli.studio.sheet_model import CHOICES, DATE_COLUMNS, EditRefused, SheetCheck, SheetModel
from cli.studio.suggestions import suggest
from functions.rules.model import Rule

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 2_000_000
"""A request body larger than this is refused (a whole sheet is at most 1,000,000 bytes)."""
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class StudioSettings:
    """What one launch serves."""

    rules_path: Path
    """The sheet; the only file the studio writes. A missing file is a new sheet, created on the first save."""
    port: int
    """The port bound (the Host header must name it)."""
    host: str = "127.0.0.1"
    """The address bound; 127.0.0.1 or localhost unless `--allow-remote`."""
    sample: EventSample | None = None
    """The sample events (None: no preview, no suggestions)."""
    stack: str | None = None
    """A stack to diff against and deploy to."""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    """The per-launch token every POST carries."""
    deployer: "Deployer | None" = None
    """How deploy runs (default: `automation.py` on the local program)."""


class Deployer:
    """`automation.py`'s preview and up for the sheet at a path (a seam for the tests)."""

    def published_rules(self, stack: str) -> tuple[Rule, ...]:
        """The rules the stack's config (its stack file) publishes; `automation.ConfigError` when it is bad."""
        import automation

        return automation.validate_stack_file(stack).rules.rules.rules

    def preview(self, stack: str, sheet: Path) -> dict[str, Any]:
        import automation

        outcome = automation.preview(stack, automation.StackSettings(rules_sheet=str(sheet)), on_output=None)
        return {"config_changes": _changes(outcome.config_changes), "change_summary": dict(outcome.change_summary)}

    def up(self, stack: str, sheet: Path) -> dict[str, Any]:
        import automation

        outcome = automation.up(stack, automation.StackSettings(rules_sheet=str(sheet)), on_output=None)
        return {"config_changes": _changes(outcome.config_changes), "change_summary": dict(outcome.change_summary),
                "result": outcome.result}


def _changes(changes: Any) -> dict[str, dict[str, Any]]:
    return {key: {"old": change.old, "new": change.new} for key, change in changes.items()}


class StudioError(Exception):
    """A request refused with a message for the page and an HTTP status."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.extra = status, extra


class Studio:
    """The server-side state of one launch and the operations the routes call (one request at a time)."""

    def __init__(self, settings: StudioSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.deployer = settings.deployer or Deployer()
        path = settings.rules_path
        self.opened: OpenedSheet | None = None
        if path.exists():
            self.opened = open_sheet(path)
            self.disk_model = SheetModel.from_csv(self.opened.text)
        else:
            self.disk_model = SheetModel.new()
        self.model = self.disk_model
        self.preview = AudiencePreview(settings.sample) if settings.sample is not None else None
        self.suggestions = suggest(settings.sample.events()).to_dict() if settings.sample is not None else None
        self.published: tuple[Rule, ...] | None = None
        self.published_error: str | None = None
        if settings.stack:
            try:
                self.published = self.deployer.published_rules(settings.stack)
            except Exception as error:  # a bad or missing stack file: say so, diff against nothing
                self.published_error = f"Pulumi.{settings.stack}.yaml: {error}"
        self.version = 0
        """Counts the edits made: what a page's edit must have seen (`edit`)."""
        self.pending: dict[str, tuple[str, str]] = {}
        """Deploy preview id → the sheet text and the SHA-256 of the file on disk it previewed."""

    # --- operations ------------------------------------------------------------------------------------

    def edit(self, operation: dict[str, Any]) -> None:
        op = operation.get("op")
        # Edits name rows by position: one from a tab that has not seen the latest change (another tab deleted or
        # moved a row) could land on the wrong row. The page sends the version it shows; an API caller may not.
        seen = operation.get("version")
        if seen is not None and seen != self.version:
            raise StudioError(409, "the sheet changed in another tab or window since this one showed it: the "
                                   "latest sheet is shown now; make the change again")
        before = self.model
        try:
            if op == "set_cell":
                self.model = self.model.set_cell(_int(operation, "row"), _column(operation), _text(operation, "value"))
            elif op == "add_row":
                at = operation.get("at")
                self.model = self.model.add_row(None if at is None else _int(operation, "at"))
            elif op == "copy_row":
                self.model = self.model.copy_row(_int(operation, "row"))
            elif op == "delete_row":
                self.model = self.model.delete_row(_int(operation, "row"))
            elif op == "move_row":
                self.model = self.model.move_row(_int(operation, "row"), _int(operation, "to"))
            elif op == "add_column":
                self.model = self.model.add_column(_text(operation, "column"))
            elif op == "pin_rule_ids":
                self.model = self.model.pin_rule_ids()
            else:
                raise StudioError(400, f"unknown edit {str(op)[:40]!r}: expected set_cell, add_row, copy_row, "
                                       "delete_row, move_row, add_column or pin_rule_ids")
        except EditRefused as error:
            raise StudioError(422, str(error)) from None
        if self.model is not before:
            self.version += 1

    def save(self) -> str:
        text = self.model.to_csv()
        path = self.settings.rules_path
        try:
            if self.opened is None:
                self.opened = _create(path, text)
            else:
                self.opened = save_sheet(self.opened, text)
        except SaveRefused as error:
            raise StudioError(409, str(error)) from None
        self.disk_model = SheetModel.from_csv(self.opened.text)
        return f"saved {self.opened.path}"

    def deploy_preview(self) -> dict[str, Any]:
        stack, on_disk = self._deployable()
        text = self.model.to_csv()
        outcome = self._run_deploy(self.deployer.preview, stack)
        preview_id = secrets.token_urlsafe(16)
        self.pending = {preview_id: (text, on_disk.sha256)}
        return {"preview_id": preview_id, **outcome}

    def deploy_up(self, preview_id: str) -> dict[str, Any]:
        stack, on_disk = self._deployable()
        previewed = self.pending.get(preview_id) if isinstance(preview_id, str) else None
        if previewed is None:
            raise StudioError(409, "no deploy preview to confirm (preview again, then confirm)")
        if previewed != (self.model.to_csv(), on_disk.sha256):
            raise StudioError(409, "the sheet changed since the deploy preview (preview again, then confirm)")
        self.pending = {}
        return self._run_deploy(self.deployer.up, stack)

    def _deployable(self) -> tuple[str, OpenedSheet]:
        stack = self.settings.stack
        if not stack:
            raise StudioError(400, "no stack: start the studio with --stack NAME to deploy")
        check = self.model.check()
        if not check.accepted:
            raise StudioError(422, f"the sheet has {len(check.problems):,} problem(s): fix them before deploying")
        if self.opened is None or self.model.to_csv() != self.opened.text:
            raise StudioError(409, "save the sheet first: the stack deploys the file on disk")
        # `automation` reads the sheet by its path: what it deploys is the file as it is now, which another
        # program may have changed since the studio opened or saved it.
        try:
            on_disk = open_sheet(self.opened.path)
        except SaveRefused as error:
            raise StudioError(409, str(error)) from None
        if on_disk.sha256 != self.opened.sha256:
            raise StudioError(409, f"{self.opened.path}: changed on disk since the studio opened or saved it; the "
                                   "studio will not deploy a sheet you have not seen (restart the studio to load it)")
        return stack, on_disk

    def _run_deploy(self, run: Callable[[str, Path], dict[str, Any]], stack: str) -> dict[str, Any]:
        import automation

        assert self.opened is not None
        try:
            return run(stack, self.opened.path)
        except automation.PulumiCliMissing as error:
            raise StudioError(503, str(error), pulumi_missing=True, csv=str(self.opened.path)) from None
        except automation.ConfigError as error:
            raise StudioError(422, "; ".join(error.problems)) from None

    # --- the state document ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        model = self.model
        check = model.check()
        previews: dict[str, Any] = {}
        seconds = 0.0
        if self.preview is not None and check.rules.rules:
            previews = {rule_id: p.to_dict() for rule_id, p in self.preview.preview(check.rules.rules).items()}
            seconds = self.preview.last_seconds
        sample = self.settings.sample
        return {
            "path": str(self.settings.rules_path),
            "version": self.version,
            "new_sheet": self.opened is None,
            "header": list(model.header),
            "columns": list(model.columns),
            "rows": _rows(model, check),
            "header_problems": [_problem(model, p) for p in check.header_problems],
            "accepted": check.accepted,
            "lines": check.lines(self.settings.rules_path.name),
            "choices": {name: list(values) for name, values in CHOICES.items()},
            "date_columns": list(DATE_COLUMNS),
            "addable_columns": list(model.addable_columns()),
            "previews": previews,
            "preview_seconds": round(seconds, 3),
            "sample": None if sample is None else {"source": sample.source, "records": sample.records,
                                                    "rejected": sample.rejected, "skipped": sample.skipped},
            "suggestions": self.suggestions,
            "dirty": self.opened is None or model.to_csv() != self.opened.text,
            "diff_disk": [c.to_dict() for c in diff_rules(self.disk_model.check().rules.rules, check.rules.rules)
                          .changes],
            "stack": self.settings.stack,
            "diff_stack": None if self.published is None else [
                c.to_dict() for c in diff_rules(self.published, check.rules.rules).changes],
            "stack_error": self.published_error,
        }


def _rows(model: SheetModel, check: SheetCheck) -> list[dict[str, Any]]:
    width = len(model.header)
    return [{"index": row.index, "number": row.number, "blank": row.blank,
             "cells": [model.cell(row.index, i) for i in range(width)],
             "rule_id": row.rule.rule_id if row.rule is not None else None,
             "problems": [_problem(model, p) for p in row.problems],
             "warnings": [_problem(model, p) for p in row.warnings]} for row in check.rows]


def _problem(model: SheetModel, problem: Any) -> dict[str, Any]:
    return {"text": str(problem), "column": problem.column, "column_index": model.problem_column(problem)}


def _create(path: Path, text: str) -> OpenedSheet:
    """Write a new sheet at `path`, never over a file that appeared meanwhile, never larger than a sheet file
    may be."""
    if (size := len(text.encode("utf-8"))) > MAX_SHEET_BYTES:
        raise SaveRefused(f"{path}: not saved: the sheet would be {size:,} bytes, more than the {MAX_SHEET_BYTES:,} "
                          "a rules sheet may have (remove rows)")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise SaveRefused(f"{path}: not saved: a file appeared there since the studio started; reopen it") from None
    except OSError as error:
        raise SaveRefused(f"{path}: not saved: {error.strerror or error}") from None
    with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    try:
        return open_sheet(path)
    except SaveRefused:
        os.unlink(path)  # ours, just written: leave nothing the next save would refuse to replace
        raise


def _int(operation: dict[str, Any], key: str) -> int:
    value = operation.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise StudioError(400, f"{key}: expected a whole number")
    return value


def _text(operation: dict[str, Any], key: str) -> str:
    value = operation.get(key)
    if not isinstance(value, str):
        raise StudioError(400, f"{key}: expected text")
    return value


def _column(operation: dict[str, Any]) -> int | str:
    value = operation.get("column")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise StudioError(400, "column: expected a column position or name")
    return value


# --- HTTP ------------------------------------------------------------------------------------------------


class HostGuard:
    """400 unless the Host header is exactly one of `allowed` (DNS rebinding: module docstring)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = [value.decode("latin-1") for name, value in scope["headers"] if name == b"host"]
            if len(hosts) != 1 or hosts[0].lower() not in self.allowed:
                await PlainTextResponse("unexpected Host header", status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    names = {"127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost") else {host}
    return frozenset(f"{name}:{port}" for name in names)


def create_app(settings: StudioSettings) -> ASGIApp:
    """The studio for one launch (module docstring)."""
    studio = Studio(settings)
    page = (STATIC / "index.html").read_text(encoding="utf-8").replace(
        "{{token}}", html.escape(settings.token, quote=True))

    def respond(body: Any, status: int = 200) -> Response:
        return JSONResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    def static(name: str, media_type: str) -> Callable[[Request], Response]:
        body = (STATIC / name).read_bytes()
        return lambda request: Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    def state(request: Request) -> Response:
        with studio.lock:
            return respond(studio.state())

    download_name = re.sub(r"[^A-Za-z0-9._-]", "_", settings.rules_path.name)

    def sheet_csv(request: Request) -> Response:
        """The sheet as edited, to download (what Deploy offers without the Pulumi CLI); changes nothing."""
        with studio.lock:
            text = studio.model.to_csv()
        return Response(text, media_type="text/csv; charset=utf-8", headers={
            **SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{download_name}"'})

    async def guarded(request: Request) -> dict[str, Any]:
        given = request.headers.get("x-csrf-token", "")
        if not secrets.compare_digest(given.encode(), settings.token.encode()):
            raise StudioError(403, "missing or wrong X-CSRF-Token (reload the page)")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise StudioError(403, "requests that change something must be application/json")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise StudioError(413, "request too large")  # before reading it
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise StudioError(413, "request too large")
        try:
            payload = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            raise StudioError(400, "the request body is not JSON (or nests too deeply)") from None
        if not isinstance(payload, dict):
            raise StudioError(400, "the request body must be a JSON object")
        return payload

    def post(action: Callable[[dict[str, Any]], Any]) -> Callable[[Request], Any]:
        def work(payload: dict[str, Any]) -> Response:
            with studio.lock:
                try:
                    result = action(payload)
                except StudioError as error:
                    body: dict[str, Any] = {"error": str(error), **error.extra}
                    if error.status not in (400, 413):
                        body["state"] = studio.state()
                    return respond(body, error.status)
                return respond({"result": result, "state": studio.state()})

        async def endpoint(request: Request) -> Response:
            try:
                payload = await guarded(request)
            except StudioError as error:
                return respond({"error": str(error)}, error.status)
            return await run_in_threadpool(work, payload)

        return endpoint

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/studio.js", static("studio.js", "text/javascript; charset=utf-8"), methods=["GET"]),
        Route("/static/studio.css", static("studio.css", "text/css; charset=utf-8"), methods=["GET"]),
        Route("/favicon.ico", lambda request: Response(status_code=204, headers=SECURITY_HEADERS), methods=["GET"]),
        Route("/api/state", state, methods=["GET"]),
        Route("/api/sheet.csv", sheet_csv, methods=["GET"]),
        Route("/api/edit", post(lambda payload: studio.edit(payload)), methods=["POST"]),
        Route("/api/save", post(lambda payload: studio.save()), methods=["POST"]),
        Route("/api/deploy/preview", post(lambda payload: studio.deploy_preview()), methods=["POST"]),
        Route("/api/deploy/up", post(lambda payload: studio.deploy_up(payload.get("preview_id"))), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.studio = studio
    return HostGuard(app, allowed_hosts(settings.host, settings.port))
