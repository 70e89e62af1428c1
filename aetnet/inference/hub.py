"""The Hugging Face Hub: push an export to a model repository, and pull a model by its Hub id.

- :func:`push_folder` uploads a folder with ``huggingface_hub`` (``create_repo``, ``create_branch`` for
  a ``revision``, ``upload_folder``), with the token of ``huggingface-cli login`` / ``hf auth login`` or
  ``HF_TOKEN``. A missing token, a repository that does not exist and cannot be created, a refused
  token and an unreachable Hub are each one :class:`~aetnet.errors.AetnetError`.
- :func:`resolve_model` turns what a user passes as a model (a folder, or a Hub id ``OWNER/NAME``)
  into a local folder: an existing path is used as it is; a Hub id is downloaded with
  ``snapshot_download`` into the Hub cache (``$HF_HOME``/``$HF_HUB_CACHE``), at ``revision``, and read
  from that cache without the network once there (``HF_HUB_OFFLINE=1``).

``HF_ENDPOINT`` points both at another Hub (the tests run a local stand-in).
"""

from __future__ import annotations

import re
from pathlib import Path

from aetnet.errors import AetnetError

#: ``OWNER/NAME`` as the Hub spells repository ids (letters, digits, ``-``, ``_``, ``.``).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
LOGIN = "run `huggingface-cli login` (or `hf auth login`) or set HF_TOKEN"


def is_hub_id(ref: str | Path) -> bool:
    """Whether ``ref`` names a Hub repository: ``OWNER/NAME`` and no such path exists here."""
    return not Path(ref).exists() and bool(HUB_ID.match(str(ref)))


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exception types of a Hub that cannot be reached: the transport errors of the HTTP client
    ``huggingface_hub`` uses (``httpx2`` in 2.x, ``httpx`` before), plus the built-in ones."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def resolve_model(ref: str | Path, revision: str | None = None) -> Path:
    """A local model folder for ``ref``: the path itself, or the Hub id ``OWNER/NAME`` downloaded.

    Raises:
        AetnetError: ``revision`` given for a local folder; the repository or revision does not exist
            (or is private); offline and not cached; the Hub cannot be reached.
    """
    if not is_hub_id(ref):
        if revision is not None:
            raise AetnetError(f"{ref}: --revision picks a branch of a Hub repository, but {ref} is a local path; "
                              "drop --revision or pass a Hub id OWNER/NAME")
        return Path(ref)
    return download_model(str(ref), revision)


def download_model(repo_id: str, revision: str | None = None) -> Path:
    """``snapshot_download`` of a model repository into the Hub cache (offline: from the cache)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision}" if revision else ""
    try:
        return Path(snapshot_download(repo_id, revision=revision, repo_type="model"))
    except RepositoryNotFoundError:
        raise AetnetError(
            f"{repo_id}: no such folder here, and no model repository {repo_id} on {_endpoint()} that this "
            f"token can read; check the path or the Hub id (a private repository needs a token: {LOGIN})"
        ) from None
    except RevisionNotFoundError:
        raise AetnetError(f"{repo_id}: the Hub repository has no revision '{revision}'; pass an existing branch, "
                          "tag or commit to --revision") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise AetnetError(
            f"{repo_id}: no such folder here, and the Hub model {repo_id}{at} is not in the Hugging Face cache while "
            "the Hub cannot be reached (HF_HUB_OFFLINE is set or there is no network); download it once online, "
            "or pass a local folder") from None
    except HfHubHTTPError as exc:
        raise AetnetError(f"{repo_id}: the Hub at {_endpoint()} answered {_status(exc)} while downloading; "
                          f"try again later ({_first_line(exc)})") from None
    except _network_errors() as exc:
        raise AetnetError(f"{repo_id}: cannot reach the Hub at {_endpoint()} ({type(exc).__name__}); check the "
                          "network (or HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use the cached copy") from None


def _status(exc) -> str:
    response = getattr(exc, "response", None)
    return f"HTTP {response.status_code}" if response is not None else "an error"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def push_folder(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
                commit_message: str | None = None) -> str:
    """Upload ``folder`` to the model repository ``repo_id`` (created when missing, ``private`` then),
    on branch ``revision`` (created from ``main`` when missing).

    Returns:
        The URL of the commit.

    Raises:
        AetnetError: no token; the repository does not exist and this token cannot create it; the
            token is refused; the Hub cannot be reached; offline mode is on.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    if not HUB_ID.match(repo_id):
        raise AetnetError(f"--push-to-hub {repo_id}: a Hub repository id is OWNER/NAME (letters, digits, - _ .)")
    token = get_token()
    if not token:
        raise AetnetError(f"--push-to-hub {repo_id}: no Hugging Face token found; {LOGIN}")
    api = HfApi(token=token)
    where = f"{repo_id} on {api.endpoint}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision, repo_type="model",
                                 commit_message=commit_message or f"aetnet export of {Path(folder).name}")
    except OfflineModeIsEnabled:
        raise AetnetError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set; unset it to upload") from None
    except ValueError as exc:  # the Hub's validation refused the model card's metadata
        raise AetnetError(f"--push-to-hub {repo_id}: the Hub refused {Path(folder) / 'README.md'}: "
                          f"{' '.join(str(exc).split())}") from None
    except RepositoryNotFoundError:
        raise AetnetError(
            f"--push-to-hub {repo_id}: the repository {where} does not exist and this token cannot create it; "
            "create it on the Hub first, or use an OWNER that is you or an organisation you can write to"
        ) from None
    except HfHubHTTPError as exc:
        code = getattr(getattr(exc, "response", None), "status_code", None)
        if code == 401:
            raise AetnetError(f"--push-to-hub {repo_id}: the Hub refused the token (HTTP 401); {LOGIN} "
                              "with a token that has write access") from None
        if code == 403:
            raise AetnetError(f"--push-to-hub {repo_id}: the repository {where} does not exist and this token may "
                              "not create it, or may not write to it (HTTP 403); create it on the Hub first, or use "
                              "an OWNER that is you or an organisation you can write to") from None
        raise AetnetError(f"--push-to-hub {repo_id}: the Hub answered {_status(exc)} ({_first_line(exc)}); "
                          "try again later") from None
    except _network_errors() as exc:
        raise AetnetError(f"--push-to-hub {repo_id}: cannot reach the Hub at {api.endpoint} "
                          f"({type(exc).__name__}); check the network (or HF_ENDPOINT) and try again") from None
    return str(getattr(info, "commit_url", info))
