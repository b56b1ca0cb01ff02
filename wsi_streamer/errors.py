"""The exception tree shared by every layer.

Lower layers raise these with context; ``server/errors.py`` owns the only mapping from
exception type to HTTP status and error code. Messages never carry secrets or host paths.
"""

from __future__ import annotations


class WsiError(Exception):
    """Base of every error this package raises on purpose."""


# --- storage -------------------------------------------------------------------------------


class StorageError(WsiError):
    """The storage backend answered with a failure other than "not found"."""


class StorageConnectionError(StorageError):
    """The storage backend could not be reached (refused, timed out, DNS)."""


class StorageTimeout(StorageConnectionError):
    """A storage read ran past its total deadline (``limits.STORAGE_READ_BASE_S`` plus its size
    at ``limits.STORAGE_MIN_RATE``): a stalled or trickling origin; reported as 504."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what}: storage too slow, gave up after {seconds:.0f} s "
                         "(the read's deadline)")
        self.what = what
        self.seconds = seconds


class RedirectRefused(StorageError):
    """An HTTP origin redirected a read where redirects may not go (another origin, a path
    outside the prefix, a private address; ``WSI_HTTP_REDIRECTS``); reported as 502."""


class FlightTimeout(StorageConnectionError):
    """Waited too long for another thread's storage work (a stalled read); reported as 502."""


class FlightAbandoned(StorageError):
    """The thread doing shared work ended without a result."""


class ObjectChanged(StorageError):
    """The stored object was replaced since it was opened (ETag mismatch): reopen it."""

    def __init__(self, slide_id: str) -> None:
        super().__init__(f"slide {slide_id} was replaced while being read")
        self.slide_id = slide_id


class SlideNotFound(WsiError):
    """No object or file with this slide id."""

    def __init__(self, slide_id: str) -> None:
        super().__init__(f"slide not found: {slide_id}")
        self.slide_id = slide_id


class AssociatedImageNotFound(SlideNotFound):
    """The slide has no associated image (label, macro, thumbnail) of this name, or they are
    not served (``WSI_ASSOCIATED_IMAGES``)."""

    def __init__(self, slide_id: str, name: str) -> None:
        WsiError.__init__(self, f"slide {slide_id} has no associated image {name!r}")
        self.slide_id = slide_id
        self.name = name


class InvalidSlideId(SlideNotFound):
    """The id can never name a slide (traversal, NUL, absolute, too long); reported as 404."""


class ReadPastEnd(WsiError):
    """A read asked for bytes beyond the end of the object (corrupt offsets)."""


# --- format --------------------------------------------------------------------------------


class UnsupportedFormat(WsiError):
    """The file is readable but outside the supported subset; the message names the reason."""


class ImageNotInSeries(UnsupportedFormat):
    """A series id's selection (``io.series.split_selection``: a DICOM focal plane or optical
    path) names an image the series does not hold; the message lists those it holds."""


class InvalidTiff(UnsupportedFormat):
    """The TIFF structure is damaged or hostile (loops, absurd counts, offsets past the end)."""


class LimitExceeded(UnsupportedFormat):
    """The file would make an open or a request exceed a bound of ``wsi_streamer.limits``
    (``limit`` is its name); reported as 415 with the limit in the message."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(f"{message} (limit {limit})")
        self.limit = limit


class Overloaded(WsiError):
    """Too many heavy renders are running in this process; retry after ``retry_after`` s
    (503 with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MetricsOff(WsiError):
    """Metrics are off in this process (their folder is full: ``server.metricsfiles``); the
    warning saying why was logged once, when they went off (503, not logged again)."""


class DeadlineExceeded(WsiError):
    """Work ran past its budget (``budget.within``): a request, an overview build or a slide
    open in the patch pipeline. ``what`` names the work, ``seconds`` its budget, ``done`` the
    work done by then (``budget.Meter.progress``), when counted."""

    def __init__(self, what: str, seconds: float, done: str | None = None) -> None:
        super().__init__(f"{what} exceeded its budget of {seconds:g} s"
                         + (f" ({done})" if done else ""))
        self.what = what
        self.seconds = seconds
        self.done = done


class WorkAbandoned(WsiError):
    """The work's consumer went away (a client that disconnected): stopped at the next tile."""


class DecodeError(WsiError):
    """Tile bytes could not be decoded into pixels."""


class EncodeError(WsiError):
    """Pixels could not be encoded into the output format."""


# --- request validation --------------------------------------------------------------------


class InvalidRequest(WsiError):
    """A request parameter is malformed."""


class InvalidLevel(InvalidRequest):
    def __init__(self, level: int, level_count: int) -> None:
        super().__init__(f"level {level} is outside the pyramid (valid: 0 to {level_count - 1})")
        self.level = level
        self.level_count = level_count


class TileOutOfBounds(InvalidRequest):
    def __init__(self, level: int, x: int, y: int, tiles_x: int, tiles_y: int) -> None:
        super().__init__(
            f"tile ({x}, {y}) is outside level {level}'s grid "
            f"(x: 0 to {tiles_x - 1}, y: 0 to {tiles_y - 1})"
        )
        self.level, self.x, self.y = level, x, y
        self.tiles_x, self.tiles_y = tiles_x, tiles_y


class InvalidQuality(InvalidRequest):
    def __init__(self, raw: object) -> None:
        super().__init__(f"quality must be an integer from 1 to 100, got {str(raw)[:32]!r}")


class InvalidParameter(InvalidRequest):
    """Any other malformed query parameter."""


class NotImplementedFeature(InvalidRequest):
    """A well-formed request for a feature this server does not implement (an IIIF rotation
    that is not a multiple of 90, a format it does not write); reported as 501."""


# --- auth ----------------------------------------------------------------------------------


class AuthError(WsiError):
    """Base for signed-URL failures; ``code`` is the API error code."""

    code = "invalid_signature"


class MissingSignature(AuthError):
    code = "missing_signature"


class MissingExpiry(AuthError):
    code = "missing_expiry"


class SignatureExpired(AuthError):
    code = "signature_expired"


class InvalidSignature(AuthError):
    code = "invalid_signature"


class InvalidSignatureFormat(AuthError):
    code = "invalid_signature_format"


class InvalidExpiryFormat(AuthError):
    code = "invalid_expiry_format"


class ConfigError(WsiError):
    """A configuration value is invalid; the message names the variable."""


class ResumeStateError(WsiError, ValueError):
    """A saved loader or pipeline state cannot be restored here: another version, other
    sources, another recipe or seed, or a malformed state; the message says which."""
