"""The web app: a few FastAPI routes over an `Explorer`.

Pages are rendered on the server (Jinja2, autoescaped) from `templates/`; every change is a plain HTML
form POST answered by a redirect to the page, so the browser needs no script (a few lines filter the gallery
and the scoring sheet). A browser gets its own state (its `Visitor`: edits,
image, messages) with its first action on the page (an upload, a pick, an edit), through a random session
cookie (HttpOnly, SameSite=Strict); a request that only looks (a page, a 404, a refused request, whatever
site's page made the browser send it) makes none, so no number of them pushes out a visitor's work. What one
visitor does is never seen or saved by another. The tabs of one browser share its state; a message that
answers an action ("Saved to ...") is shown by the page that action leads to, not by another tab. Heavy
work (decoding, explanations, pages, saves) runs in a bounded pool of worker threads, refits and shortcut
repairs (`repairing`) in their own, one at a time, so that a page is answered while one runs. Safe by default: the app answers only to local host names
unless told otherwise, refuses POSTs from other sites' pages (by their `Origin`, or `Referer`), cannot be
framed (`X-Frame-Options`, CSP `frame-ancestors`), loads nothing but its own script, caps uploads (10 MB)
and their pixels (Pillow's limit, 89.48 megapixels, unless set), and decodes them only as common image
formats. Images from the data set are chosen by index; no file-system path ever comes from the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.middleware.trustedhost import TrustedHostMiddleware

from pipnet.core.data_config import DataConfig
from pipnet.data.images import max_pixels as pixel_limit, megapixels, set_max_pixels
from pipnet.train.refit import RefitResult
from pipnet.use.serve import repairing
from pipnet.use.serve.session import Explorer, UploadError, Visitor, Visitors
from pipnet.use.serve.views import page_context

__all__ = ["LOCAL_HOSTS", "MAX_UPLOAD_BYTES", "create_app"]

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 10 * 2**20
FORM_OVERHEAD = 64 * 2**10  # multipart headers and boundaries around the file
DRAIN_LIMIT = 256 * 2**20  # an oversized upload is read to its end (up to this) so that the browser gets the page
LOCAL_HOSTS = ("127.0.0.1", "localhost")
ANCHORS = ("explanation", "gallery", "sheet", "edits")
COOKIE = "pipnet_session"
_NOTICE_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")  # the ids of Visitor.notify, in the page's URL
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

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
    max_pixels: int | None = None,
    allowed_hosts: tuple[str, ...] | list[str] = LOCAL_HOSTS,
    workers: int = 2,
    max_visitors: int = 32,
    idle_minutes: float = 60.0,
    detector: str = "auto",
    precision: str = "auto",
) -> FastAPI:
    """The web app of one model.

    Args:
        model_dir: a saved model (`model.safetensors` + `config.json`), e.g. a run folder.
        data: a run folder or training config YAML whose data to use, or a `DataConfig`; default: the
            model folder's own `config.yaml` when it has one.
        out_dir: where edited models are saved, each in a new folder (default: beside `model_dir`).
        device: where to run the model (default: CUDA when present).
        max_upload_bytes: the largest image file accepted.
        max_pixels: the most pixels (width x height) an image may have, for this whole process
            (`pipnet.data.images.set_max_pixels`: Pillow's guard, raised or lowered); None keeps the
            current limit (Pillow's default: 89.48 megapixels).
        allowed_hosts: host names the app answers to (`["*"]` for any, when served on a network).
        workers: threads that decode, explain and draw (the pages of that many visitors are made at once).
        max_visitors: visitor states kept (the least recent is forgotten first).
        idle_minutes: a visitor's state is forgotten after this long without a request.
        detector: which stored detector gives the verdicts: `auto` (the folder's choice), `knn` or `paper`.
        precision: the precision of the verdicts: `auto` (the detectors', fp32 unless set otherwise), `fp32`,
            `bf16` or `fp16`.
    """
    if max_pixels is not None:
        set_max_pixels(max_pixels)
    explorer = Explorer(model_dir, data, out_dir=out_dir, device=device, detector=detector, precision=precision)
    visitors = Visitors(explorer.new_visitor, limit=max_visitors, idle_seconds=idle_minutes * 60)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pipnet-serve")
    refits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipnet-refit")  # one at a time, queued

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        pool.shutdown(wait=False, cancel_futures=True)
        refits.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"PIP-Net: {explorer.model_dir.name}", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)  # fmt: skip
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.state.explorer = explorer
    app.state.visitors = visitors

    @app.exception_handler(ClientDisconnect)
    async def client_went_away(request: Request, _: ClientDisconnect) -> Response:
        """A browser closed (a tab, a stopped upload) before its request was read: a line in the log, no traceback."""
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s %s: %s disconnected before its request was read", request.method, request.url.path, client)
        return Response(status_code=400)  # nobody is there to read it

    async def work(fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on a worker thread of the pool."""
        return await asyncio.wrap_future(pool.submit(fn, *args))

    def as_visitor(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(visitor: Visitor, *args: Any) -> Any:
            with visitor.lock:
                return fn(visitor, *args)

        return run

    def render(visitor: Visitor, error: str | None, status: int, notice: str | None, notice_id: str | None) -> HTMLResponse:
        with visitor.lock:
            context = page_context(explorer, visitor)
        html = _ENV.get_template("index.html.j2").render(
            **context, error=error, notice=notice, notice_id=notice_id, max_upload_mb=max_upload_bytes / 2**20,
            pixel_limit=f"{megapixels(limit)} megapixels" if (limit := pixel_limit()) else "any number of pixels",
        )  # fmt: skip
        return HTMLResponse(html, status_code=status)

    async def page(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
        """The page for this request: its visitor's state (or the model as loaded, for a browser that has none)."""
        visitor: Visitor | None = request.state.visitor
        notice_id = request.query_params.get("notice")
        notice_id = notice_id if notice_id and _NOTICE_ID.fullmatch(notice_id) else None
        notice = visitor.take_notice(notice_id) if visitor is not None else None
        notice = " ".join(m for m in (forgotten(request), notice) if m) or None
        return await work(render, visitor or explorer.new_visitor(), error, status, notice, notice_id)

    def forgotten(request: Request) -> str | None:
        """Why this browser's earlier state is gone (once: for the page or redirect that shows it), or None."""
        if not request.state.dead_key or request.state.told:
            return None
        request.state.told = True
        return visitors.forgotten(request.state.dead_key)

    def visitor_for_action(request: Request) -> Visitor:
        """The visitor of this request; an action from a browser without one (a first upload, pick or edit) makes it."""
        if request.state.visitor is None:
            request.state.visitor, request.state.new = visitors.create(), True
        return request.state.visitor

    def back_to(request: Request, anchor: str = "", notice: str | None = None) -> RedirectResponse:
        """The redirect to the page after an action; a notice is shown by that page only (not by other tabs)."""
        message = " ".join(m for m in (forgotten(request), notice) if m)
        query = f"?notice={request.state.visitor.notify(message)}" if message else ""
        return RedirectResponse(f"/{query}" + (f"#{anchor}" if anchor in ANCHORS else ""), status_code=303)

    @app.middleware("http")
    async def visitor_and_headers(request: Request, call_next):
        """Refuse cross-site POSTs; find the request's visitor (made only by an action); add the security headers."""
        if request.method == "POST" and _from_another_site(request):
            response = Response("cross-site request refused", status_code=403, media_type="text/plain")
        elif request.url.path == "/page.js" or request.url.path.startswith("/prototypes/"):
            response = await call_next(request)  # the same for everyone: no visitor state made for these
        else:
            key = request.cookies.get(COOKIE)
            request.state.visitor = visitors.find(key)
            request.state.dead_key = key if key and request.state.visitor is None else None  # a forgotten visitor's cookie
            request.state.new = request.state.told = False
            try:
                response = await call_next(request)
            finally:
                if request.state.new:
                    visitors.answered(request.state.visitor)
            if request.state.new:
                response.set_cookie(COOKIE, request.state.visitor.key, httponly=True, samesite="strict", path="/")
            elif request.state.dead_key and request.state.told:  # said why it is gone: stop sending the key
                response.delete_cookie(COOKIE, httponly=True, samesite="strict", path="/")
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> HTMLResponse:
        return await page(request)

    @app.get("/page.js")
    def script() -> Response:
        return Response(_ENV.loader.get_source(_ENV, "page.js")[0], media_type="text/javascript",
                        headers={"Cache-Control": "max-age=3600"})  # fmt: skip

    @app.post("/upload")
    async def upload(request: Request) -> Response:
        try:
            filename, content = await _read_upload(request, max_upload_bytes)
            await work(as_visitor(explorer.show_upload), visitor_for_action(request), filename, content)
        except UploadError as e:
            status = 413 if isinstance(e, UploadTooLarge) else 400
            return await page(request, f"Upload refused: {e}", status)
        return back_to(request, "explanation")

    @app.post("/pick")
    async def pick(request: Request) -> Response:
        form = await request.form()
        try:
            step = {"previous": -1, "next": 1}.get(str(form.get("step")), 0)
            index = _integer(form.get("index"), "image index") + step
            await work(as_visitor(explorer.show_item), visitor_for_action(request), str(form.get("split", "")), index)
        except (ValueError, IndexError) as e:
            return await page(request, str(e), 400)
        return back_to(request, "explanation")

    @app.post("/edit")
    async def edit(request: Request) -> Response:
        form = await request.form()
        visitor = visitor_for_action(request)
        try:
            prototype = _integer(form.get("prototype"), "prototype")
            raw_class = str(form.get("class_index", "")).strip()
            class_index = _integer(raw_class, "class") if raw_class else None
            action = str(form.get("action"))
            if action not in ("off", "on"):
                raise ValueError("action must be 'off' or 'on'")

            def switch(visitor: Visitor) -> None:
                (visitor.editor.switch_off if action == "off" else visitor.editor.switch_on)([prototype], class_index)
                visitor.log_edit(f"switch_{action}", [prototype], class_index)

            await work(as_visitor(switch), visitor)
        except (ValueError, IndexError) as e:
            return await page(request, str(e), 400)
        return back_to(request, str(form.get("back", "")))

    @app.post("/reset")
    def reset(request: Request) -> Response:
        visitor = visitor_for_action(request)
        with visitor.lock:
            off = visitor.editor.disabled + [p for _, p in visitor.editor.class_edits]
            visitor.editor.reset()
            visitor.log_edit("reset", off)
        return back_to(request, "edits", "Every edit was undone: this is the model as loaded.")

    @app.post("/save")
    async def save(request: Request) -> Response:
        form = await request.form()
        visitor = visitor_for_action(request)
        try:
            path = await work(as_visitor(explorer.save), visitor, str(form.get("name", "")))
        except (ValueError, OSError) as e:
            return await page(request, f"Not saved: {e}", 400)
        return back_to(request, "edits", f"Saved the edited model to {path}")

    @app.post("/refit")
    async def refit(request: Request) -> Response:
        form = await request.form()
        visitor = visitor_for_action(request)
        reason = str(form.get("reason", "")).strip()[:500] or None

        def start(visitor: Visitor) -> tuple[Path, str, Callable[[], tuple[Path, RefitResult]]]:
            if visitor.refit is not None:
                raise ValueError(f"a {visitor.refit_kind} into {visitor.refit[0]} is running: wait until it is done")
            path = explorer.reserve(str(form.get("name", "")), "refit")
            try:
                job = explorer.refit_job(visitor, path, reason)  # reads the visitor's edits now
            except BaseException:
                explorer.release(path)
                raise
            visitor.refit = (path, time.monotonic())
            notice = secrets.token_urlsafe(8)  # the page that shows how it ended: the one this action leads to
            state = visitor.edit_state()
            return path, notice, lambda: (state, *job())

        try:
            path, notice, job = await work(as_visitor(start), visitor)
        except (ValueError, FileExistsError) as e:
            return await page(request, f"Not refit: {e}", 400)
        refits.submit(job).add_done_callback(lambda done: _refit_done(explorer, visitor, path, notice, done))
        if message := forgotten(request):
            visitor.notify(message, notice)
        return RedirectResponse(f"/?notice={notice}#edits", status_code=303)

    @app.post("/mark")
    async def mark(request: Request) -> Response:
        form = await request.form()
        visitor = visitor_for_action(request)
        try:
            prototype, what = _integer(form.get("prototype"), "prototype"), str(form.get("mark"))
            await work(as_visitor(repairing.mark), visitor, prototype, what, explorer.model.num_prototypes)
        except ValueError as e:
            return await page(request, str(e), 400)
        return back_to(request, str(form.get("back", "")))

    @app.post("/repair")
    async def repair(request: Request) -> Response:
        form = await request.form()
        visitor = visitor_for_action(request)
        reason = str(form.get("reason", "")).strip()[:500] or None

        def start(visitor: Visitor) -> tuple[Path, str, Callable[[], repairing.Repaired]]:
            if visitor.refit is not None:
                raise ValueError(f"a {visitor.refit_kind} into {visitor.refit[0]} is running: wait until it is done")
            epochs = _integer(form.get("epochs", str(repairing.RepairSettings().epochs)), "epochs")
            path = explorer.reserve(str(form.get("name", "")), "repaired")
            try:
                job = repairing.repair_job(explorer, visitor, path, reason=reason, epochs=epochs)  # reads the marks now
            except BaseException:
                explorer.release(path)
                raise
            visitor.refit, visitor.refit_kind = (path, time.monotonic()), "repair"
            return path, secrets.token_urlsafe(8), job

        try:
            path, notice, job = await work(as_visitor(start), visitor)
        except (ValueError, FileExistsError) as e:
            return await page(request, f"Not repaired: {e}", 400)
        started = time.monotonic()
        refits.submit(job).add_done_callback(lambda done: _repair_done(explorer, visitor, path, notice, started, done))
        if message := forgotten(request):
            visitor.notify(message, notice)
        return RedirectResponse(f"/?notice={notice}#edits", status_code=303)

    @app.get("/prototypes/{prototype}/patches.png")
    async def patches(prototype: int) -> Response:
        png = await work(explorer.prototype_patches_png, prototype)
        if png is None:
            return Response("no such prototype, or no data to show it with", status_code=404, media_type="text/plain")
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    return app


def _outcome(done: Future, path: Path, job: str, not_done: str) -> tuple[Any, str | None]:
    """A background job's result and None, or None and the line that tells the visitor why it failed
    (`job`: "refit" or "repair"; `not_done`: the line's start, "Not refit")."""
    try:
        return done.result(), None
    except (ValueError, OSError) as e:
        return None, f"{not_done}: {e}"
    except BaseException:  # noqa: BLE001 (the visitor gets a line; the log gets the traceback)
        log.exception("the %s into %s failed", job, path)
        return None, f"{not_done}: the {job} into {path} failed (the server's log says why)"


def _refit_done(explorer: Explorer, visitor: Visitor, path: Path, notice: str, done: Future) -> None:
    """Tell the visitor how the refit ended (on the page that asks for `notice`), and free its folder name."""
    explorer.release(path)
    outcome, message = _outcome(done, path, "refit", "Not refit")
    if outcome is not None:
        state, _, result = outcome
        message = _refit_message(path, result)
    with visitor.lock:
        visitor.refit = None
        if outcome is not None:
            visitor.mark_saved(state)
        visitor.notify(message, notice)


def _repair_done(explorer: Explorer, visitor: Visitor, path: Path, notice: str, started: float, done: Future) -> None:
    """Tell the visitor how the repair ended (as `_refit_done` does), and keep it for the before/after view."""
    explorer.release(path)
    repaired, message = _outcome(done, path, "repair", "Not repaired")
    if repaired is not None:
        message = repairing.repair_message(repaired, started)
    with visitor.lock:
        visitor.refit, visitor.refit_kind = None, "refit"
        if repaired is not None:
            visitor.repaired = repaired
        visitor.notify(message, notice)


def _refit_message(path: Path, result: RefitResult) -> str:
    return (
        f"Refit the scoring sheet without prototypes {result.disabled or 'none'} and saved it to {path}: test accuracy "
        f"{result.accuracy_before:.1%} before the edit, {result.accuracy_switched_off:.1%} switched off, "
        f"{result.accuracy_refit:.1%} after the refit ({result.seconds:.1f} s)."
    )


def _from_another_site(request: Request) -> bool:
    """A request that another site's page made the browser send: its `Origin`, or without one its `Referer`,
    names another host than the request's own (`Origin: null`, sent by sandboxed and privacy-minded pages, too).
    A request with neither (a script, `curl`) is not a browser's cross-site request and passes."""
    source = request.headers.get("origin") or request.headers.get("referer")
    return source is not None and urlsplit(source).netloc != request.headers.get("host")


def _integer(value: object, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"the {what} must be a whole number, not {str(value)[:20]!r}") from None


async def _read_upload(request: Request, limit: int) -> tuple[str, bytes]:
    """The name and bytes of the form's `image` file, reading at most `limit` bytes of it.

    Raises:
        UploadError: no file, a malformed form, or a file larger than `limit`.
    """
    too_large = UploadTooLarge(f"the file is larger than {limit / 2**20:g} MB")
    received, more, tail = 0, True, b""

    async def receive():  # counts the body as it streams in, and stops it past the limit
        nonlocal received, more, tail
        message = await request.receive()
        body = message.get("body", b"")
        received += len(body)
        tail = (tail + body)[-256:]
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
    boundary = _boundary(request.headers.get("content-type", ""))
    if boundary is not None and f"--{boundary}--".encode() not in tail:
        await form.close()
        raise UploadError("the upload is not a complete form: its closing boundary is missing (was it cut short?)")
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


def _boundary(content_type: str) -> str | None:
    """The boundary of a `multipart/form-data` content type, or None for another type."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"')
    return None
