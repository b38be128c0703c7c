"""Which Kaggle credentials the client will use, found locally, in the client's own order: no network, and no
secret ever put into a message.

    python -c "from kit.data.kaggle_credentials import check_credentials; print(check_credentials())"

`check_credentials` looks for every credential form kaggle 2.2.4 accepts (access tokens, the Notebook token,
kaggle.json with KAGGLE_USERNAME / KAGGLE_KEY overrides, the OAuth cache of `kaggle auth login`);
`known_username` is the user name those forms name, for `kit kernel push --dry-run`. Used by
kit/data/kaggle_api.py, the module that talks to the client.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Mapping

from kit.errors import KitError

SETTINGS_URL = "https://www.kaggle.com/settings/api"


def _kaggle_json_dir(env: Mapping[str, str], home: Path) -> Path:
    """The folder the client reads kaggle.json from (KaggleApi.config_dir)."""
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    legacy = home / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return legacy


def _token_file(path: Path, problems: list[str], label: str) -> bool:
    """True if `path` holds a non-empty token; an empty one is recorded as a problem."""
    if not path.is_file():
        return False
    if not path.read_text(errors="replace").strip():
        problems.append(f"{label} {path} is empty")
        return False
    return True


def _exists(name: str) -> bool:
    try:
        return Path(name).exists()
    except (OSError, ValueError):  # a long token is no file name
        return False


def _access_token_form(env: Mapping[str, str], home: Path, problems: list[str]) -> str | None:
    """Access tokens, as kagglesdk.get_access_token_from_env looks for them."""
    if env.get("KAGGLE_KERNEL_RUN_TYPE") and env.get("KAGGLE_DATA_PROXY_URL") and env.get("KAGGLE_API_V1_TOKEN"):
        if _token_file(Path(env["KAGGLE_API_V1_TOKEN"]), problems, "the Kaggle Notebook token file"):
            return "Kaggle Notebook token (KAGGLE_API_V1_TOKEN)"
    token = env.get("KAGGLE_API_TOKEN")
    if token:
        if _exists(token):
            if _token_file(Path(token), problems, "the token file named by KAGGLE_API_TOKEN,"):
                return f"token file {token} (named by KAGGLE_API_TOKEN)"
            return None  # the client stops looking for tokens here and falls back to kaggle.json
        if not token.strip():
            problems.append("KAGGLE_API_TOKEN is set but blank")
        elif "/" in token or token.startswith("~"):
            problems.append("KAGGLE_API_TOKEN looks like a file path, but no such file exists")
        else:
            return "KAGGLE_API_TOKEN environment variable"
    for name in ("access_token", "access_token.txt"):
        path = home / ".kaggle" / name
        if _token_file(path, problems, "token file"):
            return f"token file {path}"
    return None


def _api_key_form(env: Mapping[str, str], home: Path, problems: list[str]) -> str | None:
    """Legacy username + key: kaggle.json, overridden key by key by KAGGLE_USERNAME / KAGGLE_KEY."""
    config = _kaggle_json_dir(env, home) / "kaggle.json"
    values: dict = {}
    config_readable = False
    if config.is_file():
        try:
            values = json.loads(config.read_text() or "{}")
            config_readable = isinstance(values, dict)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            problems.append(f"{config} is not valid JSON (line {getattr(exc, 'lineno', '?')}): download it again "
                            f"from {SETTINGS_URL}")
        if not isinstance(values, dict):
            problems.append(f"{config} must hold a JSON object with \"username\" and \"key\"")
            values = {}
    sources = {field: f"{config}" for field in ("username", "key") if str(values.get(field) or "").strip()}
    for field, var in (("username", "KAGGLE_USERNAME"), ("key", "KAGGLE_KEY")):
        if str(env.get(var) or "").strip():
            sources[field] = var
    if len(sources) == 2:
        if sources["username"] == sources["key"] == str(config):
            return f"username and key in {config}"
        if (sources["username"], sources["key"]) == ("KAGGLE_USERNAME", "KAGGLE_KEY"):
            return "KAGGLE_USERNAME/KAGGLE_KEY environment variables"
        return f"username from {sources['username']}, key from {sources['key']}"
    if len(sources) == 1:
        (field, where), = sources.items()
        missing = "KAGGLE_KEY" if field == "username" else "KAGGLE_USERNAME"
        problems.append(f"{where} gives a {field} but there is no {'key' if field == 'username' else 'username'}: "
                        f"set {missing} or put both \"username\" and \"key\" in {config}")
    elif config_readable:
        problems.append(f"{config} has no \"username\" and \"key\"")
    return None


def _oauth_form(home: Path, problems: list[str]) -> str | None:
    """The OAuth login `kaggle auth login` caches (KaggleCredentials.DEFAULT_CREDENTIALS_FILE)."""
    path = home / ".kaggle" / "credentials.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        problems.append(f"{path} (cached by `kaggle auth login`) is not valid JSON: run `kaggle auth login` again")
        return None
    if not isinstance(data, dict) or not data.get("refresh_token"):
        problems.append(f"{path} (cached by `kaggle auth login`) has no refresh token: run `kaggle auth login` again")
        return None
    return f"OAuth login cached by `kaggle auth login` ({path})"


def check_credentials(env: Mapping[str, str] = os.environ, home: Path | None = None) -> str:
    """Which credential form the kaggle client will use (a description, never the secret).

    Local only: whether Kaggle accepts the credential is known at the first API call.
    """
    home = Path(home) if home is not None else Path(os.path.expanduser("~"))
    problems: list[str] = []
    form = (_access_token_form(env, home, problems) or _api_key_form(env, home, problems)
            or _oauth_form(home, problems))
    if form:
        return form
    if problems:
        raise KitError(f"Kaggle credentials are unusable: {'; '.join(problems)} (new token: {SETTINGS_URL})")
    raise KitError(f"no Kaggle credentials found: create a token at {SETTINGS_URL} ('Generate New Token') and save "
                   f"it to {home / '.kaggle' / 'access_token'} (chmod 600) or export KAGGLE_API_TOKEN=<token>; "
                   f"legacy kaggle.json in {_kaggle_json_dir(env, home)} or KAGGLE_USERNAME + KAGGLE_KEY also work")


def known_username(env: Mapping[str, str] = os.environ, home: Path | None = None) -> str | None:
    """The Kaggle user name the local credentials give (KAGGLE_USERNAME, else kaggle.json), without the network;
    None for token forms, which name no user until Kaggle is asked."""
    home = Path(home) if home is not None else Path(os.path.expanduser("~"))
    if str(env.get("KAGGLE_USERNAME") or "").strip():
        return env["KAGGLE_USERNAME"].strip()
    try:
        values = json.loads((_kaggle_json_dir(env, home) / "kaggle.json").read_text())
    except (OSError, ValueError):
        return None
    name = values.get("username") if isinstance(values, dict) else None
    return str(name).strip() or None if name else None
