"""Every bound on the work one open, one request or one process may do, whatever a file says.

Each limit is a module constant with its bound and its reason below. Lower layers import the
values from here (``format`` at parse time, ``slide.region`` and ``tile`` at request time,
``slide.registry`` and ``io.singleflight`` for what a process holds and how long it waits);
nothing reads them from the environment. A file that exceeds a file-side limit is refused with
``LimitExceeded`` (an ``UnsupportedFormat``: HTTP 415, the message names the limit); a request
that would exceed a request-side limit because of the file (a huge slide without reduced
levels) is refused the same way, never as the client's fault (400).

Peak memory per request (tile service), decoded RGB at 3 bytes per pixel:

- a native tile: one decoded tile, at most ``MAX_TILE_SIDE`` squared (real slides: 240-1024 px
  tiles, 0.2-3 MiB);
- a thumbnail, Deep Zoom tile or overview: the canvas (``SERVICE_CANVAS_PIXELS``, 48 MiB) plus
  the output (at most ``OVERVIEW_SIZE`` squared, 12 MiB), Pillow's one-axis resampling buffer
  (output width x canvas height, at most 24 MiB) and one decoded tile; about 96 MiB in all, and
  at most ``HEAVY_RENDERS`` such renders run at once per process.
- a region for the patch pipeline (``render_region`` defaults): ``MAX_CANVAS_PIXELS`` (192 MiB)
  plus ``MAX_OUTPUT_PIXELS`` (48 MiB) plus one decoded tile.
"""

from __future__ import annotations

# --- parse time: per level ---------------------------------------------------------------

MAX_DIMENSION = 1 << 20
"""Pixels per side of a level. The largest real slides are about 2e5 px; more is hostile."""

MIN_TILE_SIDE = 16
"""Smallest TileWidth/TileLength. TIFF 6.0 (section 15) requires tile sides to be multiples
of 16, so 16 is the smallest legal one; tinier tiles make per-tile overhead unbounded."""

TILE_SIDE_MULTIPLE = 16
"""TileWidth and TileLength must be multiples of this (TIFF 6.0, section 15). It also lets an
overview reduce every tile by 2, 4, 8 or 16 in integers without seams."""

MAX_TILE_SIDE = 8192
"""Largest tile side: an 8192x8192 RGB tile is 192 MiB decoded; real slides use 240-1024."""

MAX_TILES_PER_LEVEL = 1 << 21
"""Tiles per level (2,097,152). Its TileOffsets/TileByteCounts arrays are loaded into memory
(16 bytes per tile as uint64: 32 MiB at this bound); a 200,000 px square slide in 240 px tiles
has about 700,000."""

# --- parse time: per open ----------------------------------------------------------------

MAX_IFDS = 1024
"""IFDs followed in one chain (real slides have 3-30)."""

MAX_ENTRIES = 4096
"""Entries in one IFD (real IFDs have 15-40)."""

MAX_TOTAL_ENTRIES = 1 << 16
"""Entries parsed in one open, all IFDs together: with the two limits above alone a hostile
chain could make one open parse four million entries (seconds of CPU)."""

MAX_EAGER_VALUE = 1 << 20
"""Bytes of one value read with its IFD (ImageDescription, JPEGTables...)."""

MAX_OPEN_BYTES = 32 << 20
"""Bytes one open may read (IFDs, their small values and speculative windows; the first head
and tail reads included). Without it 1024 IFDs with 1 MiB descriptions read 1 GiB."""

GUESS_BUDGET = 512 * 1024
"""Bytes of speculative windows (reads before an IFD whose predecessor is unknown) per open."""

MAX_SNIFF_HITS = 256
"""ImageWidth-like patterns examined in one piece of the file while sniffing for IFDs."""

MAX_SNIFF_CANDIDATES = 2048
"""Candidate IFDs parsed while sniffing, per open (all pieces together): each costs a parse
of up to ``MAX_ENTRIES`` entries, so hostile bytes full of patterns stay cheap."""

MAX_SNIFF_BYTES = 8 << 20
"""Bytes scanned for IFD patterns per open; further pieces are not sniffed (sniffing is only
speculation: the chain alone decides what the slide contains)."""

MAX_MEMBERS = 256
"""Objects in one multi-object slide (a DICOM series folder or prefix; real ones have 4-12:
levels, label, overview, thumbnail). Each is a reader held open and a header read."""

MAX_DICOM_HEADER = 16 << 20
"""Bytes of one DICOM instance read before its Pixel Data (the header and, with it, an
Extended Offset Table of 16 bytes per frame): a 1 M-frame level fits; real headers are
2-100 KiB. The head read grows by doubling up to this."""

MAX_DICOM_FRAMES = MAX_TILES_PER_LEVEL
"""Frames of one DICOM instance (``NumberOfFrames``): their offsets are held as 16 bytes each."""

MAX_ITEM_SCAN_BYTES = 64 << 20
"""Bytes of frame items walked to find the frames of an instance without an offset table
(no Basic or Extended Offset Table): past it the instance is refused rather than read whole."""

# --- request time ------------------------------------------------------------------------

MAX_OUTPUT_PIXELS = 16 * 1024 * 1024
"""Pixels of one rendered image (48 MiB decoded)."""

MAX_CANVAS_PIXELS = 64 * 1024 * 1024
"""Pixels of decoded tiles assembled at once by ``render_region`` (192 MiB), its default for
callers such as the patch pipeline that choose their own regions."""

SERVICE_CANVAS_PIXELS = 4 * 2048 * 2048
"""Canvas bound for the tile service's renders (thumbnails, Deep Zoom, overviews): 16.8 Mpx,
48 MiB. An overview's canvas is under twice its size per side, so this always suffices there."""

MAX_TILES_PER_REQUEST = 1024
"""Tiles one Deep Zoom tile, thumbnail or region of the tile service may decode. A file whose
levels make a request decode more (no reduced level, tiny tiles) gets 415 naming this."""

# --- decode time: what one tile's codestream may cost (issue 26) ---------------------------
# Checked on the stored bytes before a tile (or a JPEG strip of an associated image) is
# handed to libjpeg-turbo or openjpeg: a stream past a bound is refused with ``LimitExceeded``
# (415 naming the bound; the patch pipeline's skip reason), never decoded. Together with the
# tile byte limit (``4*w*h*3 + 1 MiB``) they bound one tile's decode in CPU and memory.

MAX_JPEG_SCANS = 64
"""Scans (SOS markers) in one JPEG stream. Baseline encoders write 1 (3 for non-interleaved
components), libjpeg's default progressive script 10 (14 for RGB-coded), optimised progressive
encoders (mozjpeg, jpegtran ``-optimize``) at most about 20: 64 leaves 3x margin. libjpeg-turbo
makes a full pass over a scan's blocks even when the scan says they are all empty (12 bytes on
disk), so a 256 px tile of 152,835 scans cost 1.1 CPU s (200x a normal tile) and a 1024 px one
about 150 s; an empty scan costs about 8 ns per 8x8 block, so at this bound at most 0.5 ms more
for a 256 px tile and 8 ms for 1024 px. The check itself walks the stream with a C-speed
search: 19 us per CMU-1-Small-Region tile (2.4% of its 0.78 ms decode), 0.2 ms to refuse a 1.8
MB bomb that took 1.12 CPU s to decode."""

MAX_JPEG_SCAN_PIXELS = 16 * 3 * MAX_TILE_SIDE * MAX_TILE_SIDE
"""Component pixels summed over a JPEG stream's scans (a scan of Ns components covers each
component's pixels, subsampling applied): 3.2e9, sixteen passes per component of a
3-component tile of the largest side. libjpeg's progressive script covers about 4.7 per
component (14 component-scans for 3 components), so real tiles of any allowed side pass; it
bounds large tiles that stay under ``MAX_JPEG_SCANS`` with 4-component scans (64 scans of an
8192 px tile would be 1.7e10)."""

MAX_JPEG_SEGMENTS = 512
"""Marker segments (tables, APPn, COM, SOS...) walked in one JPEG stream, and markers in one
JPEG 2000 codestream's headers (real ones: under 10). Real JPEG streams have
10-40 (an ICC profile split into 64 KiB APP2 chunks adds one per chunk: 64 at
``MAX_ICC_BYTES``); the bound keeps the pre-decode walk itself cheap (a 1.8 MB tile of 4-byte
COM segments would otherwise be 450,000 steps)."""

MAX_JP2K_DECODE_BYTES = 64 << 20
"""Working set of one JPEG 2000 decode, from the codestream's SIZ before decoding: openjpeg
holds every component as int32 (4 bytes per sample) and returns a copy at 1 (precision <= 8)
or 2 bytes per sample. Real tiles pass with room: an Aperio 240 px RGB tile needs 0.8 MiB, a
1024 px one 15 MiB, a 2048 px one 61 MiB (measured peak RSS growth, YCbCr conversion
included: 3, 17 and 65 MiB), so a decode peaks at about 70 MiB at this bound. Tile and
code-block structures count too (16 KiB per tile, 400 bytes per code-block, measured): a
90-byte codestream declaring 8192x8192 grew RSS by 980 MiB, one declaring 16,384 tiles by
250 MiB, 4x4 code-blocks over 2048x2048 by 307 MiB; all are refused now (0 MiB growth)."""

MAX_JP2K_COMPONENTS = 4
"""Components of a JPEG 2000 tile (RGB, RGBA, YCbCr; a tile with more is not a slide image)."""

MAX_JP2K_PRECISION = 16
"""Bits per sample of a JPEG 2000 component (real slides: 8)."""

JP2K_DECODES = 2
"""JPEG 2000 decodes running at once per process (threads beyond it wait, polling their
budget), so concurrent requests cannot multiply ``MAX_JP2K_DECODE_BYTES``: about 140 MiB of
decode working set per process at most."""

# --- the overview ------------------------------------------------------------------------

OVERVIEW_SIZE = 2048
"""Long side of a slide's overview, in pixels (12 MiB decoded): the largest thumbnail
(``THUMBNAIL_MAX``). Slides larger than this get one overview, built once from the smallest
level at least this large and cached; thumbnails and Deep Zoom levels no larger than it are
derived from it."""

MAX_OVERVIEW_TILES = 16384
"""Tiles decoded to build one overview (a 32768 px square level in 256 px tiles). A slide
whose smallest adequate level has more gets 415 naming this instead of a thumbnail."""

OVERVIEW_FETCH_TILES = 256
"""Stored tiles an overview (or a patch pipeline's detection thumbnail) fetches at once: whole
rows of tiles, at least one. A typical thumbnail level (a few hundred tiles) is one round of
coalesced requests instead of one per row; the stored bytes held at once are those tiles' (about
5-15 MiB for 256 px JPEG tiles of 20-60 KB)."""

OVERVIEW_MEMORY_BYTES = 64 << 20
"""Decoded overviews kept per process (LRU by bytes: about five 2048 px overviews); the
encoded copy lives in the host tile cache."""

# --- per process -------------------------------------------------------------------------

HEAVY_RENDERS = 2
"""Heavy renders (overview builds, renders decoding more than ``HEAVY_TILES`` tiles) running
at once per process; cached and native tiles never wait for them."""

HEAVY_TILES = 64
"""A render decoding more tiles than this is heavy."""

HEAVY_WAIT_S = 10.0
"""Seconds a heavy render waits for a slot before the request gets 503 with Retry-After."""

RETRY_AFTER_S = 5
"""The Retry-After (seconds) of that 503."""

OPEN_SLIDES_BYTES = 256 * 1024 * 1024
"""Bytes the open slides of one registry (one per worker) may hold: a parsed structure counts
``OPEN_SLIDE_COST`` plus its loaded tile offset arrays and JPEGTables (16 bytes per tile of
each level read so far). Least recently used slides beyond it (or beyond the slide count,
``WSI_CACHE_SLIDES``) are dropped and their files closed."""

OPEN_SLIDE_COST = 16 * 1024
"""What one parsed structure counts against ``OPEN_SLIDES_BYTES`` before its arrays."""

NOT_FOUND_TTL_S = 10.0
"""Seconds a missing slide id is answered 404 without asking storage again (a missing id
otherwise costs a probed open, two ranged GETs, every time)."""

MAX_REMEMBERED_FAILURES = 4096
"""Remembered failures per registry (not found by id, unsupported verdicts by content)."""

FLIGHT_WAIT_S = 120.0
"""Seconds a thread waits for another thread's shared work (a block fetch, a slide open, a
render) before giving up with a 502: longer than one storage read with its retries (connect
5 s + read 30 s, standard retry mode), so only a stalled read trips it."""

MAX_ASSOCIATED_PIXELS = 16 * 1024 * 1024
"""Pixels of one associated image (label, macro, thumbnail), decoded whole from its strips: a
macro is about 1600 x 600; 16 Mpx is 48 MiB of RGB."""

MAX_ASSOCIATED_BYTES = 32 << 20
"""Stored bytes of one associated image."""

MAX_ICC_BYTES = 4 << 20
"""An ICC profile (TIFF tag 34675) larger than this is ignored (real ones: 0.5 KB - 1 MB)."""

# --- the metrics folder ------------------------------------------------------------------

METRICS_FREE_MARGIN = 1 << 20
"""Bytes that must stay free in ``PROMETHEUS_MULTIPROC_DIR`` beyond the files the starting
workers map (4 x 64 KiB each), or metrics are off (one warning, the server runs on): room for
new label values and for the files of workers that replace dead ones. A full folder used to kill
every worker with SIGBUS (prometheus_client writes through a mapping of a sparse file)."""

# --- work budgets (``budget``): deadlines, decoded bytes, gone clients -----------------

REQUEST_DEADLINE_S = 30.0
"""Default of ``WSI_REQUEST_DEADLINE``: seconds of work one HTTP request may take (its slide
open, waits for a heavy slot or another request's render, and every tile decode) before it
stops at the next tile with 503 ``deadline_exceeded``. A normal cold render takes well under a
second; 30 s leaves room for slow storage and stays under nginx's ``proxy_read_timeout`` (60 s),
so the client gets the JSON answer instead of the proxy's 504."""

OVERVIEW_DEADLINE_S = 50.0
"""Default of ``WSI_OVERVIEW_DEADLINE``: seconds one overview build may take. The build is
shared (its waiters, and every worker of the host through the tile cache), so it runs under its
own budget, not under the deadline or the client of the request that started it; that request
waits for it (at most this long, under nginx's 60 s), the others on their own deadline."""

MAX_DECODED_BYTES = 4 << 30
"""Bytes of decoded tiles one request or one overview build may produce (4 GiB, counted after
each tile, so passed by at most one tile): 21,000 256 px RGB tiles, more than
``MAX_TILES_PER_REQUEST`` tiles of 1024 px. At 40-200 MB/s of decoding per core it is more work
than a deadline allows; it makes the bound hold whatever the CPU, and a slide that passes it is
refused as the file's fault (415 naming it)."""

BUDGET_POLL_S = 0.05
"""Waits for a heavy-render slot or for another thread's render are cut into slices this long,
each followed by a check of the waiter's own budget (its deadline, its client)."""

CLIENT_CHECK_S = 0.05
"""Least seconds between two checks that a request's client is still connected (a
non-blocking ``MSG_PEEK`` of its socket, about a microsecond), so a render for a client that
has gone stops within this plus one tile, and a render of 16,000 tiles makes at most a few
hundred checks."""

# --- storage reads -----------------------------------------------------------------------

STORAGE_READ_BASE_S = 30.0
"""Seconds one storage read (an HTTP or S3 ranged GET, its retries and its body together) may
take before any allowance for its size; ``WSI_STORAGE_DEADLINE`` sets it per server. The
connect (5 s) and per-socket read (30 s) timeouts bound one silent wait only: an origin that
sends one byte every few seconds never trips them, and held every thread of a worker for
minutes. Past the deadline the read stops (its connection is closed, not reused) and the
request fails with ``StorageTimeout`` (504)."""

STORAGE_MIN_RATE = 256 * 1024
"""Bytes per second a storage read must average: a read of N bytes may take at most
``STORAGE_READ_BASE_S + N / STORAGE_MIN_RATE`` seconds (a 256 KiB block: 31 s; a 32 MiB
associated image: 158 s). Cloud storage sends 10-100 MB/s per stream."""

STORAGE_SLOT_WAIT_S = 1.0
"""Seconds a request waits for one of its worker's storage slots (``WSI_THREADS`` - 1 per
worker: one thread is always left for ``/health``, ``/metrics`` and cached tiles) before it
gets 503 with Retry-After. A request takes a slot only when it first needs storage (a storage
request, or waiting for another thread's read), so cached tiles never wait for one; the wait
is short because the waiting thread is the free one."""

STORAGE_STUCK_S = 5.0
"""When every storage slot of a worker has been held longer than this, storage is slow, not
busy: a request needing a slot is refused at once (503, Retry-After) instead of waiting
``STORAGE_SLOT_WAIT_S`` on the free thread, so a queue of such requests cannot keep ``/health``
waiting in turn. Longer than a slow but working read (S3 answers ranged GETs in 20-200 ms; a
loaded host in seconds), far shorter than a trickling one (``WSI_STORAGE_DEADLINE``)."""

# --- startup and readiness ----------------------------------------------------------------

STARTUP_CHECK_S = 20.0
"""Seconds ``wsi-streamer serve`` waits for its storage check (the ``check`` command's one
storage request, then one listing for the viewer URL it prints) before it refuses to start.
A bucket that does not exist, missing credentials or a refused endpoint answer in well under a
second; an endpoint that swallows packets would otherwise hold the start for the connect
timeout times the retries (a minute or more) before saying anything."""

READINESS_CHECK_S = 3.0
"""Seconds ``/health/ready`` waits for its storage check before it answers 503
(``storage_unready``). Below the probes' own 4-5 s timeouts, so the probe gets the JSON answer
instead of a timeout. The check itself runs in a thread of its own and is never started
twice at once in a worker: a stuck storage costs one thread per worker, not one per probe."""

READINESS_TTL_S = 5.0
"""Seconds a worker reuses its last readiness result (ready or not), so probes every few
seconds from the kubelet, nginx and a load balancer make at most one storage request per
worker per this interval."""

# --- the patch pipeline: slide opens -------------------------------------------------------

PIPELINE_OPEN_BUDGET_S = 60.0
"""Seconds one slide open of the patch pipeline may take: its structure, thumbnail and tissue
detection, everything before its first patch (``budget.within`` in the opening thread, checked
after each decoded thumbnail tile and between the steps). Past it the open stops and the slide
is skipped like any slide that fails to open: counted in ``pipeline/slides_failed``, its reason
("slide open exceeded its budget of 60 s") in ``stats.recent_errors``, retried at most twice
per run. A real slide opens in seconds (its thumbnail comes from the smallest adequate level);
a 256-tile slide of progressive-JPEG scan bombs took 290 s. ``PatchPipeline(open_timeout=...)``
overrides it (None: no bound)."""

PIPELINE_OPEN_PATIENCE_S = 2.0
"""Seconds the stream, with nothing else ready to hand out, waits for the open of the pool slot
it visits before serving the pool's other open slides meanwhile (the slow slide joins the
rotation when its open ends). A slow open occupies one opening thread, never the stream. A
seeded run gives the same patches whatever the timing as long as no open keeps the stream
waiting this long."""

# --- the patch pipeline: TCGA/GDC helpers (``patches.datasets.gdc``) ----------------------------

GDC_PAGE_SIZE = 1000
"""Hits asked of the GDC files API per page (its ``size``). All of TCGA's slide images (about
30,000) take some 30 pages; a page of 1000 hits of the six fields asked is about 300 KB."""

GDC_MAX_PAGES = 1000
"""Pages ``query_tcga_slides`` follows at most: a server whose ``pagination.total`` never comes
within reach (or that repeats a page) ends in an error, not an endless loop."""

GDC_TIMEOUT_S = 60.0
"""Seconds one GDC request (a query page, or the gap between two chunks of a download) may
stall before it fails."""


# --- the patch pipeline: ``patches preview`` ----------------------------------------------------

PREVIEW_MAX_SLIDES = 8
"""Slides ``wsi-streamer patches preview`` draws from a folder or an ``s3://`` prefix, at most (one
picture each, stacked in one PNG of about 1 MB per slide): the first ones, in listing order;
``-n`` patches are shared out over them."""
