"""A local stand-in for the Hugging Face Hub: the small part of its HTTP API that ``huggingface_hub``
uses to create a repository and a branch, upload a folder (preupload, then one commit with the files
inline, base64) and download a snapshot (repo info, tree listing, HEAD/GET of ``resolve``).

Written from the requests ``huggingface_hub`` sends (``hf_api.py``, ``_commit_api.py``,
``file_download.py``), not from the Hub's code. Start it with :func:`start`; point ``HF_ENDPOINT`` at
``hub.url``. Writes need ``Authorization: Bearer <hub.token>``; repositories can be created under the
owners in ``hub.owners`` only (others: 403, as the Hub answers for a namespace you cannot write to).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


def _blob_id(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, private: bool):
        self.private = private
        self.commits: dict[str, dict[str, bytes]] = {}
        self.refs: dict[str, str] = {}
        self.commit("main", {}, "initial commit")

    def commit(self, branch: str, files: dict[str, bytes], summary: str) -> str:
        parent = self.commits.get(self.refs.get(branch, ""), {})
        tree = {**parent, **files}
        sha = hashlib.sha1(json.dumps([summary, len(self.commits), sorted(
            (p, _blob_id(d)) for p, d in tree.items())]).encode()).hexdigest()
        self.commits[sha], self.refs[branch] = tree, sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class Hub:
    """The stand-in's state and server; ``requests`` counts the calls per route (for the tests)."""

    def __init__(self, token: str = "hf_standin_token", owners: tuple[str, ...] = ("alice",)):
        self.token, self.owners = token, owners
        self.repos: dict[str, Repo] = {}
        self.requests: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start(**kwargs) -> Hub:
    hub = Hub(**kwargs)
    hub.thread.start()
    return hub


#: Licence ids the Hub accepts in a card's ``license`` (a subset of its list: those a model may carry here).
HUB_LICENCES = {"apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0",
                "bsd-3-clause", "gpl-3.0", "openrail", "other", "unknown"}


def validate_card(content: str) -> list[str]:
    """The checks of the Hub's card validation this stand-in makes: YAML front matter that is a mapping,
    a known ``license`` (``other`` needs ``license_name``), lists where the Hub wants lists, and a
    ``model-index`` that ``huggingface_hub`` itself can read back into evaluation results."""
    import yaml
    from huggingface_hub.repocard_data import model_index_to_eval_results

    if not content.startswith("---\n"):
        return []  # no metadata: the Hub warns, it does not refuse
    try:
        meta = yaml.safe_load(content[4:content.index("\n---", 4)])
    except (ValueError, yaml.YAMLError) as exc:
        return [f"front matter is not YAML: {exc}"]
    if not isinstance(meta, dict):
        return ["front matter must be a mapping"]
    errors = []
    if "license" in meta and meta["license"] not in HUB_LICENCES:
        errors.append(f'"license" must be one of the Hub licence ids, got {meta["license"]!r}')
    if meta.get("license") == "other" and not meta.get("license_name"):
        errors.append('"license_name" is required when "license" is "other"')
    for key in ("tags", "datasets", "metrics"):
        if key in meta and not (isinstance(meta[key], list) and all(isinstance(v, str) for v in meta[key])):
            errors.append(f'"{key}" must be a list of strings')
    if "model-index" in meta:
        try:
            model_index_to_eval_results(meta["model-index"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            errors.append(f'"model-index" is invalid: {exc!r}')
    return errors


def _handler(hub: Hub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        # -- helpers
        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, obj, headers: dict | None = None):
            self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str | None, message: str):
            headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
            self._json(status, {"error": message}, headers)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorised(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {hub.token}"

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorised()):
                self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
                return None
            return repo

        def _count(self, route: str):
            hub.requests[route] = hub.requests.get(route, 0) + 1

        # -- routes
        def do_POST(self):
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
            body = self._body()
            if parts[:2] == ["api", "validate-yaml"]:
                self._count("validate")
                errors = validate_card(json.loads(body)["content"])
                return self._json(400 if errors else 200, {"errors": [{"message": e} for e in errors],
                                                           "warnings": []})
            if not self._authorised():
                return self._error(401, None, "Invalid credentials in Authorization header")
            if parts[:3] == ["api", "repos", "create"]:
                self._count("create")
                payload = json.loads(body)
                owner, name = payload.get("organization"), payload["name"]
                if owner not in hub.owners:
                    return self._error(403, None, f"You don't have the rights to create a model under {owner}")
                repo_id = f"{owner}/{name}"
                if repo_id in hub.repos:
                    return self._error(409, None, "You already created this model repo")
                hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private" or bool(
                    payload.get("private")))
                return self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
            if parts[:2] != ["api", "models"] or len(parts) < 6:
                return self._error(404, None, f"no route {self.path}")
            repo_id, action, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            repo = self._repo(repo_id)
            if repo is None:
                return None
            if action == "branch":
                self._count("branch")
                if revision in repo.refs:
                    return self._error(409, None, f"Branch {revision} already exists")
                repo.refs[revision] = repo.refs["main"]
                return self._json(200, {})
            if action == "preupload":
                self._count("preupload")
                files = json.loads(body)["files"]
                return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})
            if action == "commit":
                self._count("commit")
                if revision not in repo.refs:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                summary, files = "", {}
                for line in lines:
                    if line["key"] == "header":
                        summary = line["value"].get("summary", "")
                    elif line["key"] == "file":
                        value = line["value"]
                        files[value["path"]] = base64.b64decode(value["content"])
                    else:
                        return self._error(400, None, f"the stand-in does not support {line['key']} operations")
                sha = repo.commit(revision, files, summary)
                return self._json(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                                        "success": True})
            return self._error(404, None, f"no route {self.path}")

        def do_GET(self):
            self._get(head=False)

        def do_HEAD(self):
            self._get(head=True)

        def _get(self, head: bool):
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id = f"{parts[2]}/{parts[3]}"
                repo = self._repo(repo_id)
                if repo is None:
                    return None
                action = parts[4] if len(parts) > 4 else "revision"
                revision = parts[5] if len(parts) > 5 else "main"
                sha = repo.resolve(revision)
                if sha is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                tree = repo.commits[sha]
                if action == "revision":
                    self._count("info")
                    return self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                                            "siblings": [{"rfilename": p} for p in sorted(tree)]})
                if action == "tree":
                    self._count("tree")
                    return self._json(200, [{"type": "file", "path": p, "size": len(d), "oid": _blob_id(d)}
                                            for p, d in sorted(tree.items())])
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._count("download")
                repo = self._repo(f"{parts[0]}/{parts[1]}")
                if repo is None:
                    return None
                sha = repo.resolve(parts[3])
                if sha is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {parts[3]}")
                path = "/".join(parts[4:])
                data = repo.commits[sha].get(path)
                if data is None:
                    return self._error(404, "EntryNotFound", f"{path} does not exist at {parts[3]}")
                return self._send(200, data, {"X-Repo-Commit": sha, "ETag": f'"{_blob_id(data)}"',
                                              "Content-Type": "application/octet-stream"}, head=head)
            return self._error(404, None, f"no route {self.path}")

    return Handler
