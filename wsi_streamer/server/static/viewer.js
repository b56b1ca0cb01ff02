/* wsi_streamer viewer: OpenSeadragon over the app's own Deep Zoom or IIIF endpoints.
 *
 * Config comes from the page's <script type="application/json" id="viewer-config">:
 * {slideId, auth: {} | {exp, vt}, static: "/static/", root: "", protocol: "dzi" | "iiif"}. Every request the page makes
 * (metadata, DZI descriptor, tiles) carries the viewer token when auth is on; tile URLs are built
 * here because OpenSeadragon does not carry a descriptor's query string to "/dzi" URLs.
 * document.body.dataset.state is "loading", "ready" (a first tile arrived) or "error"
 * (fatal: metadata, descriptor or open failed; tile failures only show a banner). */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("viewer-config").textContent);
  var auth = config.auth || {};
  var query = auth.exp && auth.vt ? "?" + new URLSearchParams({exp: auth.exp, vt: auth.vt}) : "";
  // The whole id in one path segment ("a/b.svs" -> "a%2Fb.svs"): no "." or ".." normalisation.
  var slideBase = config.root + "/slides/" + encodeURIComponent(config.slideId);
  var iiifBase = config.root + "/iiif/3/" + encodeURIComponent(config.slideId);
  var $ = function (id) { return document.getElementById(id); };
  var viewer = null;
  var tileFailures = 0;

  document.body.dataset.state = "loading";

  // ---- errors -------------------------------------------------------------------------------

  function ApiError(status, code, message) {
    this.status = status; this.code = code; this.message = message;
  }

  /** GET url; resolves to the Response, rejects with ApiError using the JSON error body. */
  function request(url) {
    return fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (resp) {
      if (resp.ok) { return resp; }
      return resp.text().then(function (text) {
        var body = null;
        try { body = JSON.parse(text); } catch (ignored) { /* not JSON */ }
        if (body && typeof body === "object" && body.error) {
          throw new ApiError(resp.status, String(body.error), String(body.message || ""));
        }
        throw new ApiError(resp.status, resp.statusText || "http_error", text.slice(0, 200));
      });
    }, function (err) {
      throw new ApiError(0, "network_error", "Network error: " + (err && err.message || err));
    });
  }

  function describe(err) {
    if (err instanceof ApiError) {
      return {title: (err.status ? "Error " + err.status + " · " : "") + err.code,
              message: err.message};
    }
    return {title: "Viewer error", message: String(err && err.message || err)};
  }

  /** Full-screen-centred message (fatal) or bottom banner (partial failure, e.g. some tiles). */
  function showError(title, message, banner) {
    var box = $("viewer-error");
    if (!banner) { document.body.dataset.state = "error"; }
    if (banner && !box.hidden && !box.classList.contains("banner")) { return; }  // keep fatal
    box.classList.toggle("banner", !!banner);
    $("viewer-error-title").textContent = title;
    $("viewer-error-message").textContent = message;
    box.hidden = false;
  }

  // ---- metadata panel -----------------------------------------------------------------------

  function fmt(n, digits) {
    return Number(n).toLocaleString("en-US", {maximumFractionDigits: digits || 0});
  }

  function renderInfo(meta) {
    var rows = [
      ["Format", meta.format],
      ["Vendor", meta.vendor || "unknown"],
      ["Dimensions", fmt(meta.width) + " × " + fmt(meta.height) + " px"],
      ["Levels", meta.level_count + " (downsample " + (meta.levels || []).map(function (l) {
        return fmt(l.downsample, 2);
      }).join(", ") + ")"],
      ["Tile", meta.levels && meta.levels.length ?
        meta.levels[0].tile_width + " × " + meta.levels[0].tile_height + " px" : "n/a"],
      ["MPP", meta.mpp_x ? fmt(meta.mpp_x, 4) + " × " + fmt(meta.mpp_y || meta.mpp_x, 4) +
        " µm/px" : "unknown"],
      ["Magnification", meta.magnification ? fmt(meta.magnification, 2) + "×" : "unknown"],
    ];
    var dl = $("info-body");
    dl.textContent = "";
    rows.forEach(function (row) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = row[0];
      dd.textContent = row[1];
      dl.appendChild(dt); dl.appendChild(dd);
    });
  }

  function toggleInfo() {
    var panel = $("info"), collapsed = panel.classList.toggle("collapsed");
    $("info-toggle").textContent = collapsed ? "+" : "\u2212";
    $("info-toggle").setAttribute("aria-expanded", String(!collapsed));
  }

  // ---- scale bar ----------------------------------------------------------------------------

  var mpp = null;  // µm per level-0 pixel
  var MAX_BAR_PX = 160;

  function niceLength(maxUm) {
    var p = Math.pow(10, Math.floor(Math.log10(maxUm)));
    var steps = [5, 2, 1];
    for (var i = 0; i < steps.length; i++) { if (steps[i] * p <= maxUm) { return steps[i] * p; } }
    return p;
  }

  function updateScaleBar() {
    if (!viewer || !mpp || viewer.world.getItemCount() !== 1) { return; }
    // Screen (CSS) pixels per level-0 image pixel at the current (animated) zoom.
    var pxPerImagePx = viewer.world.getItemAt(0).viewportToImageZoom(viewer.viewport.getZoom(true));
    if (!(pxPerImagePx > 0)) { return; }
    var um = niceLength(MAX_BAR_PX * mpp / pxPerImagePx);
    $("scalebar-bar").style.width = Math.round(um * pxPerImagePx / mpp) + "px";
    $("scalebar-label").textContent = um >= 1000 ? fmt(um / 1000, 3) + " mm" : fmt(um, 3) + " µm";
    $("scalebar").hidden = false;
  }

  // ---- viewer -------------------------------------------------------------------------------

  function parseDzi(text) {
    var xml = new DOMParser().parseFromString(text, "application/xml");
    var image = xml.getElementsByTagName("Image")[0], size = xml.getElementsByTagName("Size")[0];
    if (!image || !size) { throw new Error("malformed DZI descriptor"); }
    return {
      width: parseInt(size.getAttribute("Width"), 10),
      height: parseInt(size.getAttribute("Height"), 10),
      tileSize: parseInt(image.getAttribute("TileSize"), 10),
      tileOverlap: parseInt(image.getAttribute("Overlap") || "0", 10),
      format: image.getAttribute("Format") || "jpg",
    };
  }

  function tileUrl(level, x, y, format) {
    return slideBase + "/dzi_files/" + level + "/" + x + "_" + y + "." + format + query;
  }

  var tileDetail = "";  // the first failed tile's JSON error, once known

  function showTileFailures() {
    var text = tileFailures + " tile" + (tileFailures > 1 ? "s" : "") + " failed to load";
    showError("Tile error", text + (tileDetail ? ": " + tileDetail : ""), true);
  }

  function onTileFailed(event) {
    tileFailures += 1;
    if (!tileDetail && event.message) { tileDetail = event.message; }
    showTileFailures();
    if (tileFailures !== 1 || !event.tile) { return; }
    // An <img> load hides the status; ask once more for the JSON error body.
    var url = typeof event.tile.getUrl === "function" ? event.tile.getUrl() : event.tile.url;
    request(url).then(null, function (err) {
      var d = describe(err);
      tileDetail = d.title + " (" + d.message + ")";
      showTileFailures();
    });
  }

  function dziSource(dzi) {
    return {
      width: dzi.width,
      height: dzi.height,
      tileSize: dzi.tileSize,
      tileOverlap: dzi.tileOverlap,
      minLevel: 0,
      getTileUrl: function (level, x, y) { return tileUrl(level, x, y, dzi.format); },
    };
  }

  function openViewer(source) {
    viewer = OpenSeadragon({
      id: "viewer",
      prefixUrl: config.static + "openseadragon/images/",
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      navigatorBackground: "#111316",
      navigatorAutoFade: false,
      autoHideControls: false,
      navigationControlAnchor: OpenSeadragon.ControlAnchor.TOP_RIGHT,
      visibilityRatio: 0.5,
      maxZoomPixelRatio: 2,
      animationTime: 0.6,
      timeout: 30000,
      tileSources: source,
    });
    window.wsiViewer = viewer;  // handy from the devtools console
    viewer.addHandler("open-failed", function (event) {
      showError("Could not open slide", event.message || "OpenSeadragon failed to open the slide");
    });
    viewer.addHandler("tile-load-failed", onTileFailed);
    ["open", "animation", "resize", "update-viewport"].forEach(function (name) {
      viewer.addHandler(name, updateScaleBar);
    });
    viewer.addHandler("tile-loaded", function () {
      if (document.body.dataset.state === "loading") { document.body.dataset.state = "ready"; }
    });
  }

  // ---- keyboard: + / - zoom, Home / 0 reset, F fullscreen, I details --------------------------

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var t = ev.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) { return; }
    var action = {
      "+": "in", "=": "in", "-": "out", "_": "out", Home: "home", "0": "home",
      f: "full", F: "full", i: "info", I: "info",
    }[ev.key];
    if (!action) { return; }
    // Capture phase on window: OpenSeadragon's own canvas key handling never sees these keys.
    ev.preventDefault();
    ev.stopPropagation();
    if (action === "info") { toggleInfo(); return; }
    if (!viewer || !viewer.viewport) { return; }
    if (action === "in") { viewer.viewport.zoomBy(1.5); viewer.viewport.applyConstraints(); }
    if (action === "out") { viewer.viewport.zoomBy(1 / 1.5); viewer.viewport.applyConstraints(); }
    if (action === "home") { viewer.viewport.goHome(); }
    if (action === "full") { viewer.setFullScreen(!viewer.isFullPage()); }
  }

  // ---- start --------------------------------------------------------------------------------

  window.addEventListener("keydown", onKey, true);
  $("info-toggle").addEventListener("click", toggleInfo);

  if (typeof OpenSeadragon !== "function") {
    showError("Viewer error", "OpenSeadragon failed to load from " + config.static);
    return;
  }

  var metadata = request(slideBase + query).then(function (r) { return r.json(); });
  // IIIF: the info.json document itself is the tile source (its "id" carries the viewer token
  // in the path when auth is on, so OpenSeadragon's tile URLs need no query string).
  var descriptor = config.protocol === "iiif" ?
    request(iiifBase + "/info.json" + query).then(function (r) { return r.json(); }) :
    request(slideBase + "/dzi" + query).then(function (r) { return r.text(); });

  metadata.then(function (meta) {
    renderInfo(meta);
    mpp = meta.mpp_x > 0 ? meta.mpp_x : null;
    updateScaleBar();
  }, function (err) {
    var d = describe(err);
    $("info-body").textContent = "";
    showError(d.title, d.message);
  });

  // Open once both answered, so a metadata error (401/404/415) is shown instead of a blank slide.
  Promise.all([metadata, descriptor]).then(function (results) {
    openViewer(config.protocol === "iiif" ? results[1] : dziSource(parseDzi(results[1])));
  }, function (err) {
    var d = describe(err);
    showError(d.title, d.message);
  });
})();
