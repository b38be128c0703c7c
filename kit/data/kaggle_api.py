"""The one module that talks to the `kaggle` client: credentials, download, submit, error mapping.

    python -m kit download          # -> download_competition(slug, data/<slug>/download)
    python -m kit upload            # -> submit_file(slug, submissions/submission.csv, message)
    python -m kit kernel push       # kit/kernel/remote.py: datasets and kernels, through call_kaggle

Credentials are found locally first (kit/data/kaggle_credentials.py: `check_credentials`,
`known_username`, re-exported here for the stages). `call_kaggle` turns
the client's HTTP and connection errors into one-line KitErrors (403: accept the rules, 429:
bounded back-off, ...). `import kaggle` authenticates on import, so it happens only in `connect`.
kit/kernel/remote.py makes its calls through `call_kaggle` too.
"""
from __future__ import annotations

import contextlib
import errno
import io
import re
import socket
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

from kit.data.kaggle_credentials import SETTINGS_URL, check_credentials, known_username  # noqa: F401
from kit.errors import KitError
from kit.fsutil import write_error, writing

RETRY_STATUSES = {429, 500, 502, 503, 504}  # transient: back off and try again
MAX_RETRY_AFTER = 300.0  # seconds; a longer Retry-After is not worth waiting for in a CLI
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
SUBMIT_FAILED = "Could not submit to competition"  # KaggleApi.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE


def connect() -> Any:
    """An authenticated kaggle.KaggleApi. Credentials are checked locally first."""
    form = check_credentials()
    quiet = io.StringIO()  # the client prints its own help text on failure; ours is the one line
    try:
        with contextlib.redirect_stdout(quiet):
            import kaggle  # authenticates on import and swallows failures
    except (Exception, SystemExit) as exc:
        raise KitError(f"the kaggle package failed to load ({type(exc).__name__}): "
                       f"reinstall it with `.venv/bin/pip install -r requirements.txt`") from None
    api = kaggle.api
    if getattr(api, "_authenticated", False):
        return api
    try:  # again, to learn why it failed
        with contextlib.redirect_stdout(quiet):
            api.authenticate()
    except SystemExit:
        raise KitError(f"Kaggle did not accept the credentials from {form}: create a new token at "
                       f"{SETTINGS_URL} and replace the old one") from None
    except Exception as exc:
        raise kaggle_error(exc, what="signing in to Kaggle", slug="") from None
    return api


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (requests' .response.status_code, or .status)."""
    response = getattr(exc, "response", None)
    for status in (getattr(response, "status_code", None), getattr(exc, "status", None),
                   getattr(exc, "status_code", None)):
        if isinstance(status, int):
            return status
    return None


def _is_connection_error(exc: BaseException) -> bool:
    import requests
    import urllib3

    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                            urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, socket.gaierror))


def _safe_text(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line with URLs cut to scheme://host/path: signed URLs carry secrets."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"(https?://[^\s?#'\"]+)[?#][^\s'\"]*", r"\1", text)
    return text[:limit]


def kaggle_error(exc: BaseException, *, what: str, slug: str, retries: int = 0, hint: str = "",
                 missing: str = "") -> KitError:
    """One-line KitError for an exception raised by the kaggle client while doing `what`; `missing`: the
    message for a 404 when what was not found is not the competition (a kernel, a dataset)."""
    status = http_status(exc)
    on = f" for '{slug}'" if slug else ""
    if status == 401:
        return KitError(f"Kaggle rejected your credentials (HTTP 401) while {what}: create a new token at "
                        f"{SETTINGS_URL} and replace the old one (see `kit.kaggle_api.check_credentials`)")
    if status == 403:
        return KitError(f"Kaggle refused {what}{on} (HTTP 403): you have not accepted the competition rules: open "
                        f"https://www.kaggle.com/competitions/{slug}/rules, click 'I Understand and Accept', "
                        f"then rerun")
    if status == 404 and missing:
        return KitError(f"{missing} (HTTP 404 while {what})")
    if status == 404:
        return KitError(f"competition '{slug}' not found on Kaggle (HTTP 404) while {what}: check "
                        f"competition.slug in your config (the name in https://www.kaggle.com/competitions/<slug>)")
    if status == 429:
        return KitError(f"Kaggle is rate limiting requests (HTTP 429) while {what}, still after {retries} retries: "
                        f"wait a few minutes and rerun")
    if status is not None and status >= 500:
        return KitError(f"Kaggle had a server error (HTTP {status}) while {what}{on}, still after {retries} "
                        f"retries: try again later")
    if status is not None:
        return KitError(f"Kaggle answered HTTP {status} while {what}{on}: {_safe_text(exc)}")
    if _is_connection_error(exc):
        return KitError(f"cannot reach kaggle.com while {what} ({type(exc).__name__}): check your internet "
                        f"connection and proxy settings{hint}")
    if isinstance(exc, SystemExit):
        return KitError(f"the kaggle client stopped (exit code {exc.code}) while {what}: check your credentials "
                        f"({SETTINGS_URL})")
    return KitError(f"Kaggle {what}{on} failed: {type(exc).__name__}: {_safe_text(exc)}")


def _retry_delay(exc: BaseException, attempt: int, base_delay: float) -> float:
    """Retry-After when the server sends a sane one, else base_delay * 2**attempt."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        after = float(headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        after = -1.0
    return after if 0 <= after <= MAX_RETRY_AFTER else base_delay * 2 ** attempt


def call_kaggle(fn: Callable[[], Any], *, what: str, slug: str, retries: int = 4, base_delay: float = 2.0,
                sleep: Callable[[float], None] | None = None, hint: str = "", missing: str = "") -> Any:
    """fn(), with rate limits and server errors retried (bounded back-off) and failures as KitError."""
    sleep = sleep or time.sleep  # looked up now, so a test can replace time.sleep
    for attempt in range(retries + 1):
        try:
            return fn()
        except KitError:
            raise
        except (Exception, SystemExit) as exc:
            status = http_status(exc)
            if status in RETRY_STATUSES and attempt < retries:
                delay = _retry_delay(exc, attempt, base_delay)
                reason = "rate limited" if status == 429 else "server error"
                print(f"Kaggle answered HTTP {status} ({reason}) while {what}: waiting {delay:.0f} s before "
                      f"retry {attempt + 1}/{retries}", flush=True)
                sleep(delay)
                continue
            error = kaggle_error(exc, what=what, slug=slug, retries=attempt, hint=hint, missing=missing)
            if status is not None or isinstance(exc, SystemExit):
                raise error from None  # requests' message holds the (maybe signed) URL
            raise error from exc
    raise AssertionError("unreachable")


def download_incomplete_reason(zip_path: Path) -> str | None:
    """Why the zip the client wrote is not a finished download, or None if it looks finished."""
    if not zip_path.is_file():
        return f"{zip_path} does not exist"
    if Path(f"{zip_path}.kaggle-partial").exists():  # the client's resume marker: interrupted
        return f"{zip_path} is a partial download"
    return zip_problem(zip_path)


def zip_problem(zip_path: Path) -> str | None:
    """Why `zip_path` is not a whole zip file, or None. Cheap: reads the directory, not the data."""
    if not zipfile.is_zipfile(zip_path):
        return f"{zip_path} is not a zip file (or is truncated)"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            first = min((info.header_offset for info in zf.infolist()), default=0)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"{zip_path} is not a readable zip file ({exc})"
    if first > 0:  # a cut-off outer zip can read as the inner zip it ends with
        return f"{zip_path} is truncated (its directory is that of a zip stored inside it)"
    return None


def download_competition(slug: str, dest_dir: str | Path, api: Any = None, force: bool = False) -> Path:
    """Download every competition file to `<dest_dir>/<slug>.zip` (the client resumes partials)."""
    dest_dir = Path(dest_dir)
    with writing(dest_dir, "paths.data_dir"):
        dest_dir.mkdir(parents=True, exist_ok=True)
    api = api if api is not None else connect()
    print(f"downloading {slug} from Kaggle into {dest_dir}", flush=True)

    def download() -> None:
        try:
            api.competition_download_files(slug, path=str(dest_dir), force=force, quiet=False)
        except OSError as exc:  # the disk, not the network (requests' errors carry no errno)
            if exc.errno in WRITE_ERRNOS:
                raise write_error(dest_dir, exc, "paths.data_dir",
                                  also="; what was downloaded is kept, `make download` resumes it") from None
            raise

    call_kaggle(download, what="downloading the competition files", slug=slug,
                hint=", or download the zip elsewhere and pass it with `python -m kit download --from path/to.zip`")
    zip_path = dest_dir / f"{slug}.zip"
    reason = download_incomplete_reason(zip_path)
    if reason:
        raise KitError(f"the download of {slug} did not finish: {reason}: run `make download` again to resume")
    return zip_path


def submit_file(slug: str, csv_path: str | Path, message: str, api: Any = None) -> tuple[str, str | None]:
    """Submit `csv_path` to competition `slug`; return Kaggle's answer and the submission's ref (None when the
    client does not say: kaggle 1.x answers with a string). A failed upload is a KitError."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise KitError(f"submission file {csv_path} not found: run `make submit` first")
    api = api if api is not None else connect()
    response = call_kaggle(lambda: api.competition_submit(str(csv_path), message, slug),
                           what="submitting", slug=slug)
    answer = response if isinstance(response, str) else getattr(response, "message", "")
    failed = getattr(api, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", SUBMIT_FAILED)
    if not answer or answer == failed or answer == SUBMIT_FAILED:
        raise KitError(f"Kaggle did not accept {csv_path} for '{slug}' (answer: {answer or 'empty'!r}): check the "
                       f"upload messages above and run `make upload` again")
    ref = getattr(response, "ref", None)
    return answer, (str(ref) if ref not in (None, "", 0) else None)
