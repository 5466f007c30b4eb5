"""Where the databricks backend finds the workspace and its token: as the Databricks CLI and
SDKs do (DATABRICKS_HOST and DATABRICKS_TOKEN, else a profile of ~/.databrickscfg). They are
never kept with the run."""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from reprorun.errors import UserInputError


@dataclass(frozen=True)
class Credentials:
    """A workspace and a personal access token, with where they were read."""

    host: str
    token: str = field(repr=False)
    source: str


def credentials(profile: str | None, environ: Mapping[str, str] | None = None) -> Credentials:
    """The workspace and token as the Databricks CLI and SDKs find them.

    A profile named in the backend config is used as a whole (it is kept with the run, so
    ``reprorun runs status`` reaches the same workspace from any shell). Otherwise each of
    DATABRICKS_HOST and DATABRICKS_TOKEN wins over the profile's ``host`` and ``token``; the
    profile is DATABRICKS_CONFIG_PROFILE or DEFAULT of DATABRICKS_CONFIG_FILE (default
    ~/.databrickscfg), read unless both variables are set.
    """
    env = os.environ if environ is None else environ
    path = Path(env.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg").expanduser()
    explicit = profile is not None
    name = profile or env.get("DATABRICKS_CONFIG_PROFILE") or None
    host = "" if explicit else env.get("DATABRICKS_HOST", "").strip()
    token = "" if explicit else env.get("DATABRICKS_TOKEN", "").strip()
    host_from = "DATABRICKS_HOST" if host else ""
    token_from = "DATABRICKS_TOKEN" if token else ""
    if not (host and token):
        section = _profile(path, name or "DEFAULT", required=name is not None)
        if section is not None:
            where = f"profile {name or 'DEFAULT'} of {path}"
            if not host and section.get("host", "").strip():
                host, host_from = section["host"].strip(), where
            if not token and section.get("token", "").strip():
                token, token_from = section["token"].strip(), where
            if not token and any(k in section for k in ("client_id", "auth_type", "username")):
                raise UserInputError(
                    f"The {where} signs in with {section.get('auth_type') or 'OAuth or a password'}"
                    "; the databricks backend uses a personal access token: add `token = ...` "
                    "to that profile (databricks configure --token), or set DATABRICKS_TOKEN."
                )
    if not (host and token):
        found = [f"{key} from {src}" for key, src in (("host", host_from), ("token", token_from))]
        raise UserInputError(
            "No Databricks credentials for the databricks backend (found: "
            f"{', '.join(f for f in found if not f.endswith(' from ')) or 'nothing'}). It reads "
            "them as the Databricks CLI does: the environment variables DATABRICKS_HOST and "
            "DATABRICKS_TOKEN, else the keys host and token of a profile in "
            f"{path} (DEFAULT, or the one named by the option 'profile' or "
            "DATABRICKS_CONFIG_PROFILE; DATABRICKS_CONFIG_FILE names another file). Run "
            "`databricks configure --token`, or set DATABRICKS_HOST and DATABRICKS_TOKEN."
        )
    source = host_from if host_from == token_from else f"{host_from} and {token_from}"
    return Credentials(workspace_url(host, source), token, source)


def _profile(path: Path, name: str, required: bool) -> dict[str, str] | None:
    if not path.is_file():
        if required:
            raise UserInputError(
                f"Databricks profile {name!r} was asked for, but {path} does not exist "
                "(databricks configure --token --profile NAME writes it)."
            )
        return None
    # No DEFAULT merging into other profiles (as the SDKs read the file), no % interpolation.
    parser = configparser.ConfigParser(default_section="\0", interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"Cannot read the Databricks config file {path}: {exc}") from None
    if not parser.has_section(name):
        if not required:
            return None
        raise UserInputError(
            f"Databricks profile {name!r} is not in {path} (profiles there: "
            f"{', '.join(parser.sections()) or 'none'})."
        )
    return dict(parser.items(name))


def workspace_url(host: str, source: str) -> str:
    """``https://<host>`` from a host as the CLI accepts it (with or without a scheme)."""
    given = host.strip().rstrip("/")
    parsed = urlparse(given if "://" in given else f"https://{given}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserInputError(
            f"The Databricks host {host!r} (from {source}) is not a workspace URL such as "
            "https://adb-1234567890123456.7.azuredatabricks.net."
        )
    return f"{parsed.scheme}://{parsed.netloc}"
