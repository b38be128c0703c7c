"""The Kaggle boundary: credential forms, error mapping, back-off, download and submit with a fake client."""
from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import requests

from kit.data import kaggle_api
from kit.errors import KitError

SLUG = "dogs-vs-cats-redux-kernels-edition"
SECRET = "s3cr3t-KGAT-0123456789abcdef"


def http_error(status: int, headers: dict | None = None) -> requests.exceptions.HTTPError:
    """What the kaggle client raises: requests' HTTPError with a response, its URL carrying a signature."""
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    url = f"https://storage.googleapis.com/kaggle/{SLUG}.zip?X-Goog-Signature={SECRET}"
    return requests.exceptions.HTTPError(f"{status} Client Error: for url: {url}", response=response)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- check_credentials: every form the client accepts, found without the network -----------------------

def test_token_in_environment(tmp_path):
    form = kaggle_api.check_credentials({"KAGGLE_API_TOKEN": SECRET}, home=tmp_path)
    assert form == "KAGGLE_API_TOKEN environment variable" and SECRET not in form


def test_token_file_named_by_environment(tmp_path):
    token = write(tmp_path / "tok", SECRET)
    form = kaggle_api.check_credentials({"KAGGLE_API_TOKEN": str(token)}, home=tmp_path)
    assert str(token) in form and SECRET not in form


@pytest.mark.parametrize("name", ["access_token", "access_token.txt"])
def test_token_file_in_home(tmp_path, name):
    write(tmp_path / ".kaggle" / name, SECRET + "\n")
    form = kaggle_api.check_credentials({}, home=tmp_path)
    assert form == f"token file {tmp_path / '.kaggle' / name}"


def test_username_and_key_in_environment(tmp_path):
    form = kaggle_api.check_credentials({"KAGGLE_USERNAME": "me", "KAGGLE_KEY": SECRET}, home=tmp_path)
    assert form == "KAGGLE_USERNAME/KAGGLE_KEY environment variables"


def test_kaggle_json_in_home(tmp_path):
    config = write(tmp_path / ".kaggle" / "kaggle.json", json.dumps({"username": "me", "key": SECRET}))
    assert kaggle_api.check_credentials({}, home=tmp_path) == f"username and key in {config}"


def test_kaggle_json_in_config_dir(tmp_path):
    config = write(tmp_path / "cfgdir" / "kaggle.json", json.dumps({"username": "me", "key": SECRET}))
    form = kaggle_api.check_credentials({"KAGGLE_CONFIG_DIR": str(config.parent)}, home=tmp_path / "home")
    assert str(config) in form


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the client uses XDG folders on Linux only")
@pytest.mark.parametrize("xdg", [True, False])
def test_kaggle_json_in_xdg_config(tmp_path, xdg):
    base = tmp_path / "xdg" if xdg else tmp_path / ".config"
    config = write(base / "kaggle" / "kaggle.json", json.dumps({"username": "me", "key": SECRET}))
    env = {"XDG_CONFIG_HOME": str(base)} if xdg else {}
    assert str(config) in kaggle_api.check_credentials(env, home=tmp_path)


def test_environment_key_completes_kaggle_json(tmp_path):
    config = write(tmp_path / ".kaggle" / "kaggle.json", json.dumps({"username": "me"}))
    form = kaggle_api.check_credentials({"KAGGLE_KEY": SECRET}, home=tmp_path)
    assert form == f"username from {config}, key from KAGGLE_KEY"


def test_oauth_login_cache(tmp_path):
    write(tmp_path / ".kaggle" / "credentials.json", json.dumps({"refresh_token": SECRET, "username": "me"}))
    form = kaggle_api.check_credentials({}, home=tmp_path)
    assert "kaggle auth login" in form and SECRET not in form


def test_kaggle_notebook_token(tmp_path):
    token = write(tmp_path / "nb-token", SECRET)
    env = {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "KAGGLE_DATA_PROXY_URL": "http://proxy",
           "KAGGLE_API_V1_TOKEN": str(token)}
    assert "KAGGLE_API_V1_TOKEN" in kaggle_api.check_credentials(env, home=tmp_path)


def test_token_is_used_before_a_broken_kaggle_json(tmp_path):
    # the client tries tokens first, so a broken kaggle.json beside a token does not matter
    write(tmp_path / ".kaggle" / "kaggle.json", "{not json")
    write(tmp_path / ".kaggle" / "access_token", SECRET)
    assert "access_token" in kaggle_api.check_credentials({}, home=tmp_path)


def test_missing_credentials_say_how_to_set_them_up(tmp_path):
    with pytest.raises(KitError) as err:
        kaggle_api.check_credentials({}, home=tmp_path)
    message = str(err.value)
    assert "no Kaggle credentials found" in message and "https://www.kaggle.com/settings/api" in message
    assert str(tmp_path / ".kaggle" / "access_token") in message and "KAGGLE_API_TOKEN" in message
    assert "KAGGLE_USERNAME" in message and "\n" not in message


@pytest.mark.parametrize("setup, expected", [
    (lambda h: write(h / ".kaggle" / "kaggle.json", '{"username": "me", "key": "' + SECRET), "is not valid JSON"),
    (lambda h: write(h / ".kaggle" / "kaggle.json", json.dumps({"username": "me"})), "there is no key"),
    (lambda h: write(h / ".kaggle" / "kaggle.json", json.dumps([SECRET])), "must hold a JSON object"),
    (lambda h: write(h / ".kaggle" / "kaggle.json", json.dumps({"user": "me", "token": SECRET})), "has no"),
    (lambda h: write(h / ".kaggle" / "access_token", "  \n"), "is empty"),
    (lambda h: write(h / ".kaggle" / "credentials.json", json.dumps({"access_token": SECRET})), "no refresh token"),
])
def test_malformed_credential_files_are_named(tmp_path, setup, expected):
    path = setup(tmp_path)
    with pytest.raises(KitError) as err:
        kaggle_api.check_credentials({}, home=tmp_path)
    message = str(err.value)
    assert expected in message and str(path) in message and SECRET not in message


@pytest.mark.parametrize("env, expected", [
    ({"KAGGLE_USERNAME": "me"}, "set KAGGLE_KEY"),
    ({"KAGGLE_KEY": SECRET}, "set KAGGLE_USERNAME"),
    ({"KAGGLE_API_TOKEN": "/no/such/token-file"}, "looks like a file path"),
])
def test_malformed_environment_is_named(tmp_path, env, expected):
    with pytest.raises(KitError) as err:
        kaggle_api.check_credentials(env, home=tmp_path)
    assert expected in str(err.value) and SECRET not in str(err.value)


def test_empty_token_file_named_by_environment(tmp_path):
    token = write(tmp_path / "tok", "")
    with pytest.raises(KitError, match="named by KAGGLE_API_TOKEN.*is empty"):
        kaggle_api.check_credentials({"KAGGLE_API_TOKEN": str(token)}, home=tmp_path)


# --- call_kaggle: the client's errors as one-line KitErrors --------------------------------------------

def failing(*errors):
    """A callable raising each error in turn, then returning 'ok'; counts its calls."""
    def fn():
        fn.calls += 1
        if fn.calls <= len(errors):
            raise errors[fn.calls - 1]
        return "ok"
    fn.calls = 0
    return fn


@pytest.mark.parametrize("status, expected", [
    (401, "rejected your credentials"),
    (403, f"open https://www.kaggle.com/competitions/{SLUG}/rules, click 'I Understand and Accept', then rerun"),
    (404, f"competition '{SLUG}' not found"),
    (400, "HTTP 400"),
])
def test_http_errors_map_to_clear_messages(status, expected):
    fn = failing(http_error(status))
    with pytest.raises(KitError) as err:
        kaggle_api.call_kaggle(fn, what="downloading", slug=SLUG, sleep=lambda s: None)
    assert expected in str(err.value) and SECRET not in str(err.value) and fn.calls == 1
    assert err.value.__cause__ is None  # requests' message with the signed URL is not chained


def test_status_attribute_is_understood():
    class ApiException(Exception):
        status = 403
    with pytest.raises(KitError, match="accepted the competition rules"):
        kaggle_api.call_kaggle(failing(ApiException()), what="submitting", slug=SLUG)


def test_rate_limit_backs_off_boundedly_then_says_so(capsys):
    waits = []
    fn = failing(*[http_error(429)] * 10)
    with pytest.raises(KitError) as err:
        kaggle_api.call_kaggle(fn, what="downloading", slug=SLUG, retries=4, base_delay=2.0, sleep=waits.append)
    assert fn.calls == 5 and waits == [2.0, 4.0, 8.0, 16.0]
    assert "rate limiting" in str(err.value) and "after 4 retries" in str(err.value)
    assert capsys.readouterr().out.count("waiting") == 4


def test_rate_limit_then_success_and_retry_after_is_honoured():
    waits = []
    fn = failing(http_error(429, {"Retry-After": "7"}), http_error(503))
    assert kaggle_api.call_kaggle(fn, what="downloading", slug=SLUG, sleep=waits.append) == "ok"
    assert waits == [7.0, 4.0] and fn.calls == 3


@pytest.mark.parametrize("error", [requests.exceptions.ConnectionError("Max retries exceeded"),
                                   ConnectionRefusedError(111, "refused"), TimeoutError("timed out")])
def test_connection_errors_say_kaggle_is_unreachable(error):
    with pytest.raises(KitError, match="cannot reach kaggle.com while downloading"):
        kaggle_api.call_kaggle(failing(error), what="downloading", slug=SLUG, hint=", or use --from")


def test_other_errors_lose_url_secrets():
    error = ValueError(f"bad thing at https://x.example/f.zip?token={SECRET} then more\nsecond line")
    with pytest.raises(KitError) as err:
        kaggle_api.call_kaggle(failing(error), what="downloading", slug=SLUG)
    assert "https://x.example/f.zip" in str(err.value) and SECRET not in str(err.value)
    assert "\n" not in str(err.value)


def test_client_exit_becomes_kit_error():
    with pytest.raises(KitError, match="exit code 1"):
        kaggle_api.call_kaggle(failing(SystemExit(1)), what="downloading", slug=SLUG)


# --- download_competition / submit_file with a fake client ---------------------------------------------

class FakeApi:
    """The two KaggleApi methods kit uses, recording their calls."""
    COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE = "Could not submit to competition"

    def __init__(self, zip_source: Path | None = None, error: BaseException | None = None,
                 answer: str = "Successfully submitted to Dogs vs. Cats Redux"):
        self.zip_source, self.error, self.answer, self.calls = zip_source, error, answer, []

    def competition_download_files(self, competition, path=None, force=False, quiet=True):
        self.calls.append(("download", competition, path, force))
        if self.error:
            raise self.error
        shutil.copyfile(self.zip_source, Path(path) / f"{competition}.zip")

    def competition_submit(self, file_name, message, competition, quiet=False, sandbox=False):
        self.calls.append(("submit", file_name, message, competition))
        if self.error:
            raise self.error
        return types.SimpleNamespace(message=self.answer, ref=1)


def test_download_competition_returns_the_zip(tmp_path, competition_zip):
    api = FakeApi(competition_zip)
    zip_path = kaggle_api.download_competition(SLUG, tmp_path / "dl", api=api)
    assert zip_path == tmp_path / "dl" / f"{SLUG}.zip" and zip_path.read_bytes() == competition_zip.read_bytes()
    assert api.calls == [("download", SLUG, str(tmp_path / "dl"), False)]


def test_download_left_partial_is_an_error(tmp_path, competition_zip):
    class PartialApi(FakeApi):
        def competition_download_files(self, competition, path=None, force=False, quiet=True):
            Path(path, f"{competition}.zip").write_bytes(competition_zip.read_bytes()[:1000])
            Path(path, f"{competition}.zip.kaggle-partial").write_text("{}")
    with pytest.raises(KitError, match="did not finish.*partial download.*make download"):
        kaggle_api.download_competition(SLUG, tmp_path, api=PartialApi())


def test_download_403_says_accept_the_rules(tmp_path):
    with pytest.raises(KitError, match="I Understand and Accept"):
        kaggle_api.download_competition(SLUG, tmp_path, api=FakeApi(error=http_error(403)))


def test_submit_file_returns_the_answer(tmp_path):
    csv = write(tmp_path / "submission.csv", "id,label\n1,0.5\n")
    api = FakeApi()
    assert kaggle_api.submit_file(SLUG, csv, "note", api=api)[0] == api.answer
    assert api.calls == [("submit", str(csv), "note", SLUG)]


def test_submit_file_failed_upload_is_an_error(tmp_path):
    csv = write(tmp_path / "submission.csv", "id,label\n1,0.5\n")
    with pytest.raises(KitError, match="did not accept"):
        kaggle_api.submit_file(SLUG, csv, "note", api=FakeApi(answer="Could not submit to competition"))


# --- connect: the lazily imported client, faked in sys.modules ------------------------------------------

@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No Kaggle variables, an empty home."""
    for name in list(__import__("os").environ):
        if name.startswith("KAGGLE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return tmp_path / "home"


def fake_kaggle(monkeypatch, authenticated: bool, error: BaseException | None = None):
    api = types.SimpleNamespace(_authenticated=authenticated, attempts=0)

    def authenticate():
        api.attempts += 1
        print("Authentication required ... the client's help text")
        raise error
    api.authenticate = authenticate
    monkeypatch.setitem(sys.modules, "kaggle", types.SimpleNamespace(api=api))
    return api


def test_connect_returns_the_authenticated_client(clean_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    api = fake_kaggle(monkeypatch, authenticated=True)
    assert kaggle_api.connect() is api and api.attempts == 0


def test_connect_without_credentials_never_loads_the_client(clean_env, monkeypatch):
    api = fake_kaggle(monkeypatch, authenticated=False, error=SystemExit(1))
    with pytest.raises(KitError, match="no Kaggle credentials found"):
        kaggle_api.connect()
    assert api.attempts == 0


@pytest.mark.parametrize("error, expected", [(SystemExit(1), "did not accept the credentials from KAGGLE_API_TOKEN"),
                                             (requests.exceptions.ConnectionError("x"), "cannot reach kaggle.com"),
                                             (http_error(401), "rejected your credentials")])
def test_connect_failures_are_one_line(clean_env, monkeypatch, capsys, error, expected):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    fake_kaggle(monkeypatch, authenticated=False, error=error)
    with pytest.raises(KitError) as err:
        kaggle_api.connect()
    assert expected in str(err.value) and SECRET not in str(err.value)
    assert "help text" not in capsys.readouterr().out
