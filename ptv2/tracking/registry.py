"""The MLflow model registry: versions, aliases (champion / challenger), tags, descriptions, downloads.
Aliases and tags only: the stages API is deprecated since MLflow 2.9. The store it talks to: ``store``."""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from ptv2.errors import ArtifactError
from ptv2.files import file_lock
from ptv2.tracking.health import sqlite_file
from ptv2.tracking.store import STORE_FOLDER, _mlflow, artifact_bar, has_store, repo_root, tracking_uri

log = logging.getLogger(__name__)


def register_version(root: str | Path, model_name: str, run_id: str, artifact_path: str,
                     tags: dict[str, str]) -> str:
    mlflow = _mlflow(root)
    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(model_name)
    # a logged model's URI (models:/m-...) as is; else a path inside the run's artifacts
    source = artifact_path if "://" in artifact_path or artifact_path.startswith("models:/") \
        else f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    v = client.create_model_version(model_name, source=source, run_id=run_id, tags=tags)
    return str(v.version)


def json_tag(tags: dict[str, str], key: str) -> dict[str, Any]:
    """The JSON object ptv2 wrote in tag ``key`` ({} when there is none). Anyone may edit a tag in MLflow's UI:
    one that no longer holds a JSON object reads as {} with a warning (what depends on it is then rebuilt or
    shown without it), where it was a JSONDecodeError traceback in the publish stage and ``ptv2 registry``."""
    raw = tags.get(key)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("tag %s = %r is not what ptv2 wrote there (a JSON object): read as empty", key, raw[:80])
        return {}
    return value


def alias_version(root: str | Path, model_name: str, alias: str) -> tuple[str, dict[str, str]] | None:
    """(version, tags) holding ``alias``, or None."""
    if not has_store(root):
        return None
    mlflow = _mlflow(root)
    try:
        v = mlflow.MlflowClient().get_model_version_by_alias(model_name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    return str(v.version), dict(v.tags)


def version_key(root: str | Path, model_name: str, version: str) -> str:
    """``version`` and when it was registered: a registered model deleted and registered again numbers its
    versions from 1 anew, so a number alone may name another model than it did."""
    v = _mlflow(root).MlflowClient().get_model_version(model_name, version)
    return f"{v.version}@{v.creation_timestamp}"


def gate_lock_path(root: str | Path) -> Path | None:
    """The lock file a gate holds on this project's store: beside a sqlite database (the default ``mlruns.db``, or
    ``MLFLOW_TRACKING_URI=sqlite:///…``); None for a server or database no file here can lock."""
    db = sqlite_file(tracking_uri(root))
    return None if db is None else db.with_name(f"{db.name}.gate.lock")


@contextlib.contextmanager
def gate_lock(root: str | Path) -> Iterator[None]:
    """Held while a gate reads the champion, compares and moves the aliases. Two pipelines on one store (`dvc exp
    run --queue` with several jobs, two clones of a project) each compared with the same champion, and the last to
    finish took the alias, even from a better model promoted meanwhile. On a server the gate re-reads the champion
    before moving it instead (``release.gate``)."""
    path = gate_lock_path(root)
    if path is None or not os.access(path.parent, os.W_OK):
        yield
        return
    with file_lock(path, wait=False) as mine:
        if mine:
            yield
            return
    log.info("another gate on this store is deciding; waiting for it (%s)", path)
    with file_lock(path):
        yield


def set_alias(root: str | Path, model_name: str, alias: str, version: str) -> None:
    _mlflow(root).MlflowClient().set_registered_model_alias(model_name, alias, version)


def describe_version(root: str | Path, model_name: str, version: str, text: str) -> None:
    """The version's description (what the registry UI shows first): its model card."""
    _mlflow(root).MlflowClient().update_model_version(model_name, version, description=text)


def tag_version(root: str | Path, model_name: str, version: str, tags: dict[str, str]) -> None:
    client = _mlflow(root).MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(model_name, version, k, v)


def version_files(root: str | Path, name: str, version: str) -> str:
    """Where a registered version's files are: ``models:/NAME/VERSION``; or, in a project folder that was moved or
    copied (its store keeps absolute file:// locations in the old folder: gone, or another project's), the
    same files under this project's own ``mlartifacts/``."""
    from urllib.parse import unquote, urlparse

    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    mlflow, uri = _mlflow(root), f"models:/{name}/{version}"
    try:
        stored = ModelsArtifactRepository.get_underlying_uri(uri)
    except mlflow.exceptions.MlflowException:
        return uri  # the caller's download says what is missing
    path, store = Path(unquote(urlparse(stored).path)), repo_root(root) / STORE_FOLDER
    if not stored.startswith("file://") or path.is_relative_to(store) or STORE_FOLDER not in path.parts:
        return uri
    parts = path.parts
    here = store.joinpath(*parts[len(parts) - parts[::-1].index(STORE_FOLDER):])
    if not here.is_dir():
        return uri
    log.info("%s: the store names %s, outside this project (moved or copied); reading this project's %s", uri,
             path, here)
    return here.as_uri()


def download_version(root: str | Path, model_name: str, version: str, dst: str | Path) -> Path:
    mlflow = _mlflow(root)
    Path(dst).mkdir(parents=True, exist_ok=True)
    why, fix = "its artifact folder is gone or empty", "register the task again (`dvc repro --force promote@<task>`)"
    try:
        with artifact_bar():
            got = Path(mlflow.artifacts.download_artifacts(artifact_uri=version_files(root, model_name, version),
                                                           dst_path=str(dst)))
        if got.is_dir() and any(got.iterdir()):  # a deleted local source downloads as an empty folder
            return got
    except (mlflow.exceptions.MlflowException, OSError) as e:  # a deleted version or artifact folder
        why = str(e).splitlines()[0][:200]
        if isinstance(e, PermissionError):  # the files are there: registering again would not help
            fix = "give this user read access to the artifact store"
    raise UnreadableVersion(f"models:/{model_name}/{version} cannot be downloaded ({why}); {fix}",
                            f"cannot be downloaded ({why})")


def download_bundle(root: str | Path, model_name: str, version: str, dst: str | Path) -> Path:
    """Download a registered pyfunc version; returns its bundle folder (as its MLmodel names it), checked."""
    return _checked_download(root, model_name, version, dst, f"models:/{model_name}/{version}")[0]


def _checked_download(root: str | Path, name: str, version: str, dst: str | Path,
                      what: str) -> tuple[Path, dict[str, Any] | None]:
    """``name`` v``version`` downloaded into ``dst``: its bundle folder, checked against its manifest
    (``DamagedBundle`` naming ``what``), and the serving settings it was registered with."""
    path = download_version(root, name, version, dst)
    rel, config = _bundle_flavor(path, name, version)
    _check_bundle(path / rel, what)
    return path / rel, config


def _bundle_flavor(path: Path, model_name: str, version: str) -> tuple[str, dict[str, Any] | None]:
    """(the bundle's folder inside a downloaded version, its model config) as its MLmodel says."""
    import yaml
    from mlflow.models.model import MODEL_CONFIG  # the flavor's key for the model config given at logging

    from ptv2.serving.requests import BUNDLE_ARTIFACT as BUNDLE

    try:
        flavor = yaml.safe_load((path / "MLmodel").read_text())["flavors"]["python_function"]
        return flavor["artifacts"][BUNDLE]["path"], flavor.get(MODEL_CONFIG)
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise UnreadableVersion(f"{model_name} v{version}: not a ptv2 bundle model (its MLmodel names no {BUNDLE!r} "
                                f"artifact); register models with the promote stage",
                                f"is not a ptv2 bundle model (its MLmodel names no {BUNDLE!r} artifact)") from None


def list_versions(root: str | Path, prefix: str = "") -> list[dict[str, Any]]:
    """Every registered version of the models named ``prefix``…: name, version, aliases, tags."""
    if not has_store(root):
        return []
    client = _mlflow(root).MlflowClient()
    rows = []
    like = f"name LIKE '{prefix}%'" if prefix else None  # names are letters, digits, '_', '-', '.' (no quote)
    for rm in _every(client.search_registered_models, filter_string=like):
        if not rm.name.startswith(prefix):  # LIKE reads '_' as any character
            continue
        aliases: dict[str, list[str]] = {}
        for a, v in (rm.aliases or {}).items():
            aliases.setdefault(str(v), []).append(a)
        for mv in _every(client.search_model_versions, filter_string=f"name='{rm.name}'"):
            rows.append({"name": rm.name, "version": str(mv.version), "aliases": aliases.get(str(mv.version), []),
                         "tags": dict(mv.tags)})
    return sorted(rows, key=lambda r: (r["name"], int(r["version"])))


def _every(search: Callable[..., Any], **kwargs: Any) -> Iterator[Any]:
    """Every result of an MLflow search, page after page: one page holds 100 registered models, so on a store
    with more (a team's server) the others were missed."""
    token = None
    while True:
        page = search(page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


def resolve_model(root: str | Path, uri: str) -> tuple[str, str]:
    """``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or MLflow's ``models:/NAME/latest`` (the newest version)
    -> (name, version), checked against the registry: a missing model, alias or version is an ArtifactError
    naming it, the store and what is there."""
    import re

    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/@]+)|/(\d+|latest))", uri)
    if not m:
        raise ArtifactError(f"{uri!r} is not a registered model URI; use models:/NAME@ALIAS, models:/NAME/VERSION "
                            f"or models:/NAME/latest (`ptv2 registry` lists them)")
    name, alias, version = m.groups()
    if not has_store(root):
        raise _no_model(name, tracking_uri(root), [])
    mlflow = _mlflow(root)
    client, where = mlflow.MlflowClient(), mlflow.get_tracking_uri()
    try:
        rm = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        raise _no_model(name, where, sorted(r.name for r in client.search_registered_models())) from None
    if alias is not None:
        if alias not in (rm.aliases or {}):
            have = ", ".join(f"@{a} (v{v})" for a, v in sorted((rm.aliases or {}).items())) or "none"
            raise ArtifactError(f"model {name!r} in {where} has no alias @{alias} (its aliases: {have}); "
                                f"no version has been promoted to it")
        return name, str(rm.aliases[alias])
    if version == "latest":  # as MLflow reads it: the highest version number (a registered model has one)
        numbers = [int(v.version) for v in _every(client.search_model_versions, filter_string=f"name='{name}'")]
        if not numbers:
            raise ArtifactError(f"model {name!r} in {where} has no version (`ptv2 registry` lists them)")
        return name, str(max(numbers))
    try:
        client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException:
        raise ArtifactError(f"model {name!r} in {where} has no version {version} (`ptv2 registry` lists them)") from None
    return name, version


# how models get into a store, for a user who finds none: `dvc repro` is up to date in a clone that pulled the
# outputs from a DVC remote, or after mlruns.db was deleted, though nothing is registered in this store
REGISTER_HINT = ("`dvc repro` trains, gates and registers them (if it is up to date, they went to another store: set "
                 "MLFLOW_TRACKING_URI to it, or register them in this one with `dvc repro --force --downstream "
                 "promote@<task>` for each adapted task)")


def _no_model(name: str, where: str, known: list[str]) -> ArtifactError:
    return ArtifactError(f"no registered model {name!r} in {where} (registered: {', '.join(known) or 'none'}); "
                         + ("pick one from `ptv2 registry`" if known else REGISTER_HINT))


def check_model_files(root: str | Path, uri: str, name: str, version: str) -> str:
    """A registered version (``uri``, resolved to ``name`` v``version``) has its files where the registry says, or
    in this project's moved store (``version_files``, returned), and its bundle passes its manifest
    (``_checked_download``, as ``fetch_bundle``'s): MLflow's answer to a moved or cleaned artifact store was a traceback once the server
    started, to a damaged bundle ~95 lines of two. Downloaded without MLflow's bar (the server shows its own)."""
    import tempfile

    mlflow, files = _mlflow(root), version_files(root, name, version)
    with tempfile.TemporaryDirectory(prefix="ptv2-serve-") as tmp, artifact_bar(show=False):
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=f"{files}/MLmodel", dst_path=tmp)
        except (mlflow.exceptions.MlflowException, OSError) as e:
            where = str(e).split(":\n", 1)[0].removeprefix("The following failures occurred while downloading one "
                                                          "or more artifacts from ")
            raise ArtifactError(f"model {name!r} v{version} is registered in {mlflow.get_tracking_uri()} but its files "
                                f"are not at {where} (no MLmodel there): the artifact store was moved or cleaned; "
                                f"restore it, or run the pipeline again (dvc repro) to register a new version") \
                from None
        _checked_download(root, name, version, Path(tmp) / "version", f"{uri} ({name} v{version})")
    return files


def fetch_bundle(root: str | Path, uri: str, dst: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """A registered model (``models:/NAME@ALIAS`` or ``/VERSION``) downloaded into ``dst``: its ONNX bundle
    (checked, ``DamagedBundle``) and the serving settings it was registered with, what `mlflow models serve` loads."""
    name, version = resolve_model(root, uri)
    return _checked_download(root, name, version, dst, f"{uri} ({name} v{version})")


class UnreadableVersion(ArtifactError):
    """A registered version that cannot be served as registered: its files gone from the artifact store, no ptv2
    bundle (registered by hand), or a bundle that fails its manifest (``DamagedBundle``); ``why``: that, as a
    phrase ("is damaged in the artifact store (…)")."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class DamagedBundle(UnreadableVersion):
    """A registered version whose bundle fails its manifest check (files changed in the artifact store)."""


def _check_bundle(bundle: Path, what: str) -> None:
    """``bundle`` passes its manifest, or DamagedBundle naming ``what`` (the registered version): its download's
    temp path and "re-export the bundle" were no way to fix it."""
    from ptv2.serving.manifest import BundleError, verify

    try:
        verify(bundle)
    except BundleError as e:
        reason = str(e).removeprefix(f"{bundle}: ").removeprefix(f"{bundle}/").split("; ")[0]
        raise DamagedBundle(f"{what}: its registered bundle fails its check ({reason}): its files in the artifact "
                            f"store changed after registration; restore them, or use another version (`ptv2 "
                            f"registry` lists them)", f"is damaged in the artifact store ({reason})") from None
