"""Where slides come from: local files and folders, ``s3://bucket/key`` objects and listed
``s3://bucket/prefix/`` prefixes, ``http(s)://host/path`` objects (HTTP cannot list, so a
prefix there is refused), and the S3 options that reach them. Stores come from the storage
factory (``io/factory.py``).

URLs stay strings (``pathlib`` would turn ``s3://`` into ``s3:/``). A missing local path or
an empty folder or prefix is an error at construction that names the item."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..io.factory import open_storage
from ..io.location import StorageSpec, split_object_url
from ..io.series import is_member_name
from ..io.storage import Storage, is_slide_name
from ..slide import NATIVE_FORMATS

# Folder listings keep these names: the native drivers' own (their table is the one home),
# plus OpenSlide's formats when that backend reads them. ``WSI_EXTENSIONS`` is wsistream's name.
NATIVE_EXTENSIONS = tuple(dict.fromkeys(ext for d in NATIVE_FORMATS for ext in d.extensions))
OPENSLIDE_EXTENSIONS = NATIVE_EXTENSIONS + (".ndpi", ".mrxs", ".vms", ".vmu", ".scn", ".bif",
                                            ".svslide")
WSI_EXTENSIONS = frozenset(OPENSLIDE_EXTENSIONS)
_S3_OPTION_NAMES = ("endpoint_url", "region", "region_name", "profile_name", "anonymous",
                    "requester_pays")  # region: the storage layer's name; region_name: boto3's


@dataclass(frozen=True)
class S3Options:
    """``storage_options`` for S3, in the storage layer's vocabulary (``open_storage``'s
    ``endpoint_url, region, profile_name, anonymous, requester_pays``; boto3's ``region_name``
    is the same setting as ``region``); unset fields fall back to the boto3 credential chain
    and ``WSI_S3_ENDPOINT`` / ``WSI_S3_REGION`` / ``WSI_S3_ANONYMOUS`` (read when the options
    are built)."""

    endpoint_url: str | None = None
    region_name: str = "us-east-1"
    profile_name: str | None = None
    anonymous: bool = False
    requester_pays: bool = False

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None,
                     environ: Mapping[str, str] | None = None) -> S3Options:
        env = os.environ if environ is None else environ
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(_S3_OPTION_NAMES))
        if unknown:
            raise ValueError(f"storage_options: unknown option(s) {unknown}; "
                             f"known: {list(_S3_OPTION_NAMES)}")
        if opts.get("region") and opts.get("region_name") and (
                opts["region"] != opts["region_name"]):
            raise ValueError(f"storage_options: region {opts['region']!r} and region_name "
                             f"{opts['region_name']!r} name one setting; give one")
        region = opts.get("region") or opts.get("region_name")
        return cls(
            endpoint_url=opts.get("endpoint_url") or env.get("WSI_S3_ENDPOINT") or None,
            region_name=region or env.get("WSI_S3_REGION") or "us-east-1",
            profile_name=opts.get("profile_name"),
            anonymous=bool(opts.get("anonymous", env.get("WSI_S3_ANONYMOUS", "").strip().lower()
                                    in ("1", "true", "yes", "on"))),
            requester_pays=bool(opts.get("requester_pays", False)),
        )

    def storage(self, bucket: str, prefix: str = "") -> Storage:
        return open_storage(StorageSpec("s3", bucket, prefix.strip("/")),
                            endpoint_url=self.endpoint_url, region=self.region_name,
                            profile_name=self.profile_name, anonymous=self.anonymous,
                            requester_pays=self.requester_pays)


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; ``ValueError`` without a bucket."""
    bucket, _, key = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"slide_paths: {url!r} has no bucket")
    return bucket, key


def is_s3(path: str) -> bool:
    return path.startswith("s3://")


def is_http(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def is_remote(path: str) -> bool:
    """An object URL the native backend reads through a storage backend (``s3://``, ``http(s)://``)."""
    return is_s3(path) or is_http(path)


def remote_object(url: str, options: S3Options) -> tuple[str, Callable[[], Storage], str]:
    """``(storage key, storage maker, slide id)`` of one object URL: the storage sits at the URL's
    root (bucket or host) and the id is the rest, so one storage serves every slide there.
    ``ValueError`` for a URL naming no object."""
    spec, slide_id = split_object_url(url)
    if spec.scheme == "s3":
        return spec.url, lambda: options.storage(spec.host), slide_id
    return spec.url, lambda: open_storage(spec), slide_id


def resolve_slide_paths(slide_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                        *, extensions: tuple[str, ...] = NATIVE_EXTENSIONS,
                        options: S3Options | None = None,
                        any_scheme: bool = False) -> list[str]:
    """Every slide named by ``slide_paths``, in order: files as given, folders expanded
    recursively (sorted, by extension), ``s3://b/k`` and ``http(s)://h/p`` kept,
    ``s3://b/prefix/`` listed (ListObjectsV2, sorted, by extension), a folder or prefix
    holding a DICOM series (``io.series``) as one slide, any other
    ``scheme://...`` kept as given (the backend that reads it decides; ``check_schemes``
    refuses them for ours). Raises ``FileNotFoundError`` naming a missing path, an empty
    folder or an empty prefix; ``ValueError`` for an ``http(s)://`` prefix (no listing) or
    nothing at all; ``TypeError`` for an item that is not a path. With ``any_scheme`` (a
    user's own backend reads the paths), every ``scheme://...`` string is kept as given,
    ``s3://`` prefixes too, unlisted."""
    if isinstance(slide_paths, (str, os.PathLike)):
        items: list[Any] = [slide_paths]
    else:
        items = list(slide_paths)
    resolved: list[str] = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"slide_paths: {item!r} is not a path or URL")
        entry = os.fspath(item)
        if "://" in entry and (any_scheme or not is_remote(entry)):
            resolved.append(entry)
        elif is_s3(entry):
            resolved.extend(_list_s3(entry, extensions, options or S3Options.from_mapping(None)))
        elif is_http(entry):
            if entry.endswith("/"):
                raise ValueError(f"slide_paths: {entry!r}: an http(s):// prefix cannot be "
                                 "listed (plain HTTP has no listing); name each slide's URL")
            split_object_url(entry)  # a malformed URL fails here, naming itself
            resolved.append(entry)
        elif os.path.isdir(entry):
            found = _folder_slides(entry, extensions)
            if not found:
                raise FileNotFoundError(f"slide_paths: No WSI files ({', '.join(extensions)}) "
                                        f"in folder {entry}")
            resolved.extend(found)
        elif os.path.isfile(entry):
            resolved.append(entry)
        else:
            raise FileNotFoundError(f"slide_paths: {entry} does not exist")
    if not resolved:
        raise ValueError("slide_paths is empty")
    return resolved


def _folder_slides(folder: str, extensions: tuple[str, ...]) -> list[str]:
    """Slide files under ``folder`` by extension, and each folder holding a DICOM series
    (``io.series``) as one slide (the folder itself when it is one), sorted."""
    found: list[str] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(is_member_name(name) for name in names):
            found.append(os.path.normpath(root))
        found.extend(os.path.join(root, name) for name in names
                     if name.lower().endswith(extensions))
    return sorted(found)


def check_schemes(paths: Iterable[str]) -> None:
    """``ValueError`` naming the first path our backends cannot read: a ``scheme://`` other
    than ``s3://`` and ``http(s)://`` (a user's own backend may read those)."""
    for path in paths:
        if "://" in path and not is_remote(path):
            raise ValueError(f"slide_paths: {path!r}: only local paths, s3:// and "
                             "http(s):// URLs (a user's own SlideBackend may read other "
                             "schemes)")


def _list_s3(url: str, extensions: tuple[str, ...], options: S3Options) -> list[str]:
    bucket, key = split_s3(url)
    if key and not key.endswith("/"):
        return [url]
    # Listed from the parent, so that a prefix that is itself one series is found as one.
    parent, _, name = key.strip("/").rpartition("/")
    storage = options.storage(bucket, parent)
    root = parent + "/" if parent else ""  # as S3Storage.prefix
    found: list[str] = []
    cursor: str | None = None
    while True:
        page = storage.list_slides(prefix=name + "/" if name else "", cursor=cursor,
                                   limit=1000)
        found.extend(f"s3://{bucket}/{root}{sid}" for sid in page.slides
                     if sid.lower().endswith(extensions) or not is_slide_name(sid))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    if not found:
        raise FileNotFoundError(f"slide_paths: no slide objects ({', '.join(extensions)}) "
                                f"under {url}")
    return sorted(found)
