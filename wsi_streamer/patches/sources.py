"""Where slides come from: local files and folders, objects and listed prefixes of the
storage backends (``s3://bucket/key``, ``s3://bucket/prefix/``; ``http(s)://host/path``, which
cannot list, so a prefix there is refused), and the options that reach them. URLs are parsed
by ``io/location.py`` and stores made by ``io/factory.py``, as the server does; which schemes
are ours is the factory's table.

URLs stay strings (``pathlib`` would turn ``s3://`` into ``s3:/``). A missing local path or
an empty folder or prefix is an error at construction that names the item."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..io.factory import BACKENDS, open_storage
from ..io.location import StorageSpec, parse_storage_url, split_object_url, url_scheme
from ..io.series import is_member_name, split_selection
from ..io.storage import OPENSLIDE_ONLY_EXTENSIONS, Storage, is_slide_name
from ..slide import NATIVE_FORMATS

# Folder listings keep these names: the native drivers' own (their table), plus OpenSlide's
# formats when that backend reads them (``io/storage.py`` holds the names). ``WSI_EXTENSIONS``
# is wsistream's name.
NATIVE_EXTENSIONS = tuple(dict.fromkeys(ext for d in NATIVE_FORMATS for ext in d.extensions))
OPENSLIDE_EXTENSIONS = NATIVE_EXTENSIONS + OPENSLIDE_ONLY_EXTENSIONS
WSI_EXTENSIONS = frozenset(OPENSLIDE_EXTENSIONS)
# Schemes our backends read through a storage backend: the factory's, but for local folders.
REMOTE_SCHEMES = frozenset(scheme for scheme in BACKENDS if scheme != "file")
# ``storage_options`` other spellings of the storage layer's names: boto3's ``region_name``.
OPTION_ALIASES = {"region_name": "region"}
# Unset options come from these variables, named as ``serve`` names them (``config.SETTINGS``;
# ``patches/cli.py`` reads the same ones for its flags).
ENV_DEFAULTS = {"endpoint_url": "WSI_S3_ENDPOINT", "region": "WSI_S3_REGION"}
ENV_FLAGS = {"anonymous": "WSI_S3_ANONYMOUS"}  # true when the variable is 1/true/yes/on


@dataclass(frozen=True)
class S3Options:
    """``storage_options`` for S3, in the storage layer's vocabulary (``open_storage``'s
    ``endpoint_url, region, profile_name, anonymous, requester_pays``; ``OPTION_ALIASES``
    spell some of them otherwise); unset fields fall back to the boto3 credential chain and
    ``ENV_DEFAULTS`` (read when the options are built)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    profile_name: str | None = None
    anonymous: bool = False
    requester_pays: bool = False

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None,
                     environ: Mapping[str, str] | None = None) -> S3Options:
        """``ValueError`` for an unknown name, or one setting given twice differently.
        Empty values count as unset."""
        env = os.environ if environ is None else environ
        names = [f.name for f in dataclasses.fields(cls)]
        opts: dict[str, Any] = {}
        for name, value in (options or {}).items():
            key = OPTION_ALIASES.get(name, name)
            if key not in names:
                raise ValueError(f"storage_options: unknown option {name!r}; known: "
                                 f"{[*names, *OPTION_ALIASES]}")
            if value is None or value == "":
                continue
            if key in opts and opts[key] != value:
                raise ValueError(f"storage_options: {name}={value!r} and {key}="
                                 f"{opts[key]!r} name one setting; give one")
            opts[key] = value
        for key, variable in ENV_DEFAULTS.items():
            if key not in opts and env.get(variable):
                opts[key] = env[variable]
        for key, variable in ENV_FLAGS.items():
            if key not in opts:
                opts[key] = env.get(variable, "").strip().lower() in ("1", "true", "yes", "on")
        for flag in ("anonymous", "requester_pays"):
            opts[flag] = bool(opts.get(flag, False))
        return cls(**opts)

    def for_scheme(self, scheme: str) -> dict[str, Any]:
        """``open_storage``'s options for a storage of ``scheme`` (S3's only for ``s3``)."""
        return dataclasses.asdict(self) if scheme == "s3" else {}


def storage_at(spec: StorageSpec, options: S3Options) -> Storage:
    """The storage at ``spec`` with ``options``: the factory's backend for its scheme."""
    return open_storage(spec, **options.for_scheme(spec.scheme))


def is_remote(path: str) -> bool:
    """An object URL the native backend reads through a storage backend (``s3://``,
    ``http(s)://``: ``REMOTE_SCHEMES``)."""
    return url_scheme(path) in REMOTE_SCHEMES


def remote_object(url: str, options: S3Options) -> tuple[str, Callable[[], Storage], str]:
    """``(storage key, storage maker, slide id)`` of one object URL: the storage sits at the URL's
    root (bucket or host) and the id is the rest, so one storage serves every slide there.
    ``ValueError`` for a URL naming no object."""
    spec, slide_id = split_object_url(url)
    return spec.url, lambda: storage_at(spec, options), slide_id


def resolve_slide_paths(slide_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                        *, extensions: tuple[str, ...] = NATIVE_EXTENSIONS,
                        options: S3Options | None = None,
                        any_scheme: bool = False) -> list[str]:
    """Every slide named by ``slide_paths``, in order: files as given, folders expanded
    recursively (sorted, by extension), ``s3://b/k`` and ``http(s)://h/p`` kept,
    ``s3://b/prefix/`` listed (ListObjectsV2, sorted, by extension), a folder or prefix
    holding a DICOM series (``io.series``) as one slide (``<series>@z=1,path=2``: its
    focal plane and optical path, ``format/dicom/planes``), any other
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
        scheme = url_scheme(entry)
        if scheme is not None and (any_scheme or scheme not in REMOTE_SCHEMES):
            resolved.append(entry)
        elif scheme is not None:
            spec = parse_storage_url(entry)  # a malformed URL fails here, naming itself
            if spec.prefix and not entry.endswith("/"):
                resolved.append(entry)
            else:
                resolved.extend(_list_prefix(entry, spec, extensions,
                                             options or S3Options.from_mapping(None)))
        elif os.path.isdir(entry):
            found = _folder_slides(entry, extensions)
            if not found:
                raise FileNotFoundError(f"slide_paths: No WSI files ({', '.join(extensions)}) "
                                        f"in folder {entry}")
            resolved.extend(found)
        elif os.path.isfile(entry) or _selected_series(entry):
            resolved.append(entry)
        else:
            raise FileNotFoundError(f"slide_paths: {entry} does not exist")
    if not resolved:
        raise ValueError("slide_paths is empty")
    return resolved


def _selected_series(entry: str) -> bool:
    """A series folder with a selection (``folder@z=1``: ``io.series.split_selection``)."""
    folder, selection = split_selection(entry)
    return bool(selection) and os.path.isdir(folder)


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
    than ``REMOTE_SCHEMES`` (a user's own backend may read those)."""
    for path in paths:
        if url_scheme(path) is not None and not is_remote(path):
            raise ValueError(f"slide_paths: {path!r}: only local paths, s3:// and "
                             "http(s):// URLs (a user's own SlideBackend may read other "
                             "schemes)")


def _list_prefix(url: str, spec: StorageSpec, extensions: tuple[str, ...],
                 options: S3Options) -> list[str]:
    """The objects under a prefix URL with a slide extension, sorted, as URLs."""
    if spec.scheme in ("http", "https"):
        raise ValueError(f"slide_paths: {url!r}: an {spec.scheme}:// prefix cannot be listed "
                         "(plain HTTP has no listing); name each slide's URL")
    # Listed from the parent, so that a prefix that is itself one series is found as one.
    parent, _, name = spec.prefix.strip("/").rpartition("/")
    storage = storage_at(StorageSpec(spec.scheme, spec.host, parent), options)
    found: list[str] = []
    cursor: str | None = None
    while True:
        page = storage.list_slides(prefix=name + "/" if name else "", cursor=cursor,
                                   limit=1000)
        found.extend(StorageSpec(spec.scheme, spec.host, f"{parent}/{sid}".lstrip("/")).url
                     for sid in page.slides
                     if sid.lower().endswith(extensions) or not is_slide_name(sid))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    if not found:
        raise FileNotFoundError(f"slide_paths: no slide objects ({', '.join(extensions)}) "
                                f"under {url}")
    return sorted(found)
