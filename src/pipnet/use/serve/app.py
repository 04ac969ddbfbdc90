"""The web app: a few FastAPI routes over an :class:`~pipnet.serve.session.Explorer`.

Pages are rendered on the server (Jinja2, autoescaped) from ``templates/``; every change is a plain HTML
form POST answered by a redirect to the page, so the browser needs no script (a few lines filter the gallery
and the scoring sheet). Safe by default: the app answers only to local host names unless told otherwise,
refuses POSTs from other sites' pages, caps uploads (10 MB) and decodes them only as common image formats.
Images from the data set are chosen by index; no file-system path ever comes from the browser.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from pipnet.core.data_config import DataConfig
from pipnet.use.serve.session import Explorer, UploadError
from pipnet.use.serve.views import page_context

__all__ = ["LOCAL_HOSTS", "MAX_UPLOAD_BYTES", "create_app"]

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 10 * 2**20
FORM_OVERHEAD = 64 * 2**10  # multipart headers and boundaries around the file
DRAIN_LIMIT = 256 * 2**20  # an oversized upload is read to its end (up to this) so that the browser gets the page
LOCAL_HOSTS = ("127.0.0.1", "localhost")
ANCHORS = ("explanation", "gallery", "sheet", "edits")

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("pipnet.use.serve", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class _TooLarge(Exception):
    """The request body passed the limit while streaming in."""


class UploadTooLarge(UploadError):
    """The uploaded file is larger than the limit."""


def create_app(
    model_dir: str | Path,
    data: str | Path | DataConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    allowed_hosts: tuple[str, ...] | list[str] = LOCAL_HOSTS,
) -> FastAPI:
    """The web app of one model.

    Args:
        model_dir: a saved model (``model.safetensors`` + ``config.json``), e.g. a run folder.
        data: a run folder or training config YAML whose data to use, or a ``DataConfig``; default: the
            model folder's own ``config.yaml`` when it has one.
        out_dir: where edited models are saved, each in a new folder (default: beside ``model_dir``).
        device: where to run the model (default: CUDA when present).
        max_upload_bytes: the largest image file accepted.
        allowed_hosts: host names the app answers to (``["*"]`` for any, when served on a network).
    """
    explorer = Explorer(model_dir, data, out_dir=out_dir, device=device)
    app = FastAPI(title=f"PIP-Net: {explorer.model_dir.name}", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.state.explorer = explorer
    notices: list[str] = []  # shown once, on the next page (one local user: no sessions)

    def page(error: str | None = None, status: int = 200) -> HTMLResponse:
        with explorer.lock:
            context = page_context(explorer)
        notice = notices.pop() if notices else None
        html = _ENV.get_template("index.html.j2").render(
            **context, error=error, notice=notice, max_upload_mb=max_upload_bytes / 2**20
        )
        return HTMLResponse(html, status_code=status)

    def back_to(anchor: str = "") -> RedirectResponse:
        return RedirectResponse("/" + (f"#{anchor}" if anchor in ANCHORS else ""), status_code=303)

    def locked(fn, *args):
        with explorer.lock:
            return fn(*args)

    @app.middleware("http")
    async def same_origin_posts(request: Request, call_next):
        """A page of another site must not drive this one (cross-site form POSTs carry their Origin)."""
        origin = request.headers.get("origin")
        if request.method == "POST" and origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return Response("cross-site request refused", status_code=403, media_type="text/plain")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return page()

    @app.post("/upload")
    async def upload(request: Request) -> Response:
        try:
            filename, content = await _read_upload(request, max_upload_bytes)
            await run_in_threadpool(locked, explorer.show_upload, filename, content)
        except UploadError as e:
            status = 413 if isinstance(e, UploadTooLarge) else 400
            return await run_in_threadpool(page, f"Upload refused: {e}", status)
        return back_to("explanation")

    @app.post("/pick")
    async def pick(request: Request) -> Response:
        form = await request.form()
        try:
            step = {"previous": -1, "next": 1}.get(str(form.get("step")), 0)
            index = _integer(form.get("index"), "image index") + step
            await run_in_threadpool(locked, explorer.show_item, str(form.get("split", "")), index)
        except (ValueError, IndexError) as e:
            return await run_in_threadpool(page, str(e), 400)
        return back_to("explanation")

    @app.post("/edit")
    async def edit(request: Request) -> Response:
        form = await request.form()
        try:
            prototype = _integer(form.get("prototype"), "prototype")
            raw_class = str(form.get("class_index", "")).strip()
            class_index = _integer(raw_class, "class") if raw_class else None
            action = {"off": explorer.editor.switch_off, "on": explorer.editor.switch_on}.get(str(form.get("action")))
            if action is None:
                raise ValueError("action must be 'off' or 'on'")
            await run_in_threadpool(locked, action, [prototype], class_index)
            explorer.log_edit(f"switch_{form.get('action')}", [prototype], class_index)
        except (ValueError, IndexError) as e:
            return await run_in_threadpool(page, str(e), 400)
        return back_to(str(form.get("back", "")))

    @app.post("/reset")
    def reset() -> Response:
        off = explorer.editor.disabled + [p for _, p in explorer.editor.class_edits]
        locked(explorer.editor.reset)
        explorer.log_edit("reset", off)
        notices.append("Every edit was undone: this is the model as loaded.")
        return back_to("edits")

    @app.post("/save")
    async def save(request: Request) -> Response:
        form = await request.form()
        try:
            path = await run_in_threadpool(locked, explorer.save, str(form.get("name", "")))
        except (ValueError, FileExistsError) as e:
            return await run_in_threadpool(page, f"Not saved: {e}", 400)
        notices.append(f"Saved the edited model to {path}")
        return back_to("edits")

    @app.post("/refit")
    async def refit(request: Request) -> Response:
        form = await request.form()
        reason = str(form.get("reason", "")).strip()[:500] or None
        try:
            path, result = await run_in_threadpool(locked, explorer.refit, str(form.get("name", "")), reason)
        except (ValueError, FileExistsError) as e:
            return await run_in_threadpool(page, f"Not refit: {e}", 400)
        notices.append(
            f"Refit the scoring sheet without prototypes {result.disabled or 'none'} and saved it to {path}: test accuracy "
            f"{result.accuracy_before:.1%} before the edit, {result.accuracy_switched_off:.1%} switched off, "
            f"{result.accuracy_refit:.1%} after the refit ({result.seconds:.1f} s)."
        )
        return back_to("edits")

    @app.get("/prototypes/{prototype}/patches.png")
    def patches(prototype: int) -> Response:
        png = locked(explorer.prototype_patches_png, prototype)
        if png is None:
            return Response("no such prototype, or no data to show it with", status_code=404, media_type="text/plain")
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    return app


def _integer(value: object, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"the {what} must be a whole number, not {str(value)[:20]!r}") from None


async def _read_upload(request: Request, limit: int) -> tuple[str, bytes]:
    """The name and bytes of the form's ``image`` file, reading at most ``limit`` bytes of it.

    Raises:
        UploadError: no file, a malformed form, or a file larger than ``limit``.
    """
    too_large = UploadTooLarge(f"the file is larger than {limit / 2**20:g} MB")
    received, more = 0, True

    async def receive():  # counts the body as it streams in, and stops it past the limit
        nonlocal received, more
        message = await request.receive()
        received += len(message.get("body", b""))
        more = message.get("more_body", False)
        if received > limit + FORM_OVERHEAD:
            raise _TooLarge
        return message

    try:
        form = await Request(request.scope, receive).form(max_files=1, max_fields=4)
    except _TooLarge:
        drained = received
        while more and drained < DRAIN_LIMIT:
            message = await request.receive()
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        raise too_large from None
    except (MultiPartException, HTTPException) as e:
        raise UploadError(f"the upload is not a valid form ({getattr(e, 'detail', e)})") from None
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise UploadError("choose an image file first")
        content = await upload.read(limit + 1)
    finally:
        await form.close()
    if len(content) > limit:
        raise too_large
    return upload.filename, content
