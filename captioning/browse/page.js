"use strict";
// The report page: cards from the inline JSON, filter and sort (kept in the URL hash), and each
// word's attention drawn on a canvas over the picture. Plain JavaScript, no network.
//
// The hash holds the view, so that a link (or a test) opens it: #q=red&sort=CIDEr-D&order=desc
// &range=BLEU-4&min=0.5&max=1&show=INDEX.WORD (show: pin word WORD of the image INDEX).
//
// The <html> element records what happened, for headless checks: data-ready, data-shown (cards
// that pass the filter), data-images-expected / -loaded / -failed, data-errors (see page.html).
(function () {
  const root = document.documentElement;
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const entries = data.entries;
  const scoreNames = data.scoreNames;
  const container = document.getElementById("cards");
  const template = document.getElementById("card-template");
  const controls = {
    query: document.getElementById("query"),
    sort: document.getElementById("sort"),
    order: document.getElementById("order"),
    range: document.getElementById("range"),
    min: document.getElementById("min"),
    max: document.getElementById("max"),
  };

  // ------------------------------------------------------------------ attention maps

  // the colour ramp and blend of captioning.viz (_heat_colours, overlay's alpha)
  const STOPS = [[0, 0, 128], [0, 90, 255], [0, 220, 220], [120, 230, 40], [255, 200, 0], [230, 20, 20]];
  const ALPHA = Math.round(0.55 * 255);
  const SIDE = 256; // heat map pixels along the picture's longer side
  const PICTURE_WIDTH = 220; // px, the largest the picture is shown (.picture in page.css)
  const PICTURE_HEIGHT = 260;

  function ramp(value) {
    const position = Math.min(Math.max(value, 0), 1) * (STOPS.length - 1);
    const low = Math.min(Math.floor(position), STOPS.length - 2);
    const frac = position - low;
    return STOPS[low].map((c, i) => c * (1 - frac) + STOPS[low + 1][i] * frac);
  }

  // source cells of each output pixel along one axis: torch's bilinear, align_corners=False
  // (captioning.metrics.grounding.upsample_attention)
  function axis(out, size) {
    const scale = size / out;
    const cells = [];
    for (let d = 0; d < out; d++) {
      const source = Math.max(scale * (d + 0.5) - 0.5, 0);
      const low = Math.floor(source);
      cells.push([low, low < size - 1 ? low + 1 : low, source - low]);
    }
    return cells;
  }

  function gridHeat(row, grid, width, height) {
    const [h, w] = grid;
    const xs = axis(width, w);
    const ys = axis(height, h);
    const heat = new Float64Array(width * height);
    for (let y = 0; y < height; y++) {
      const [y0, y1, ly] = ys[y];
      for (let x = 0; x < width; x++) {
        const [x0, x1, lx] = xs[x];
        const top = row[y0 * w + x0] * (1 - lx) + row[y0 * w + x1] * lx;
        const bottom = row[y1 * w + x0] * (1 - lx) + row[y1 * w + x1] * lx;
        heat[y * width + x] = top * (1 - ly) + bottom * ly;
      }
    }
    let low = Infinity;
    let high = -Infinity;
    for (const v of heat) { low = Math.min(low, v); high = Math.max(high, v); }
    const span = Math.max(high - low, 1e-12);
    return heat.map((v) => (v - low) / span); // min-max, as captioning.viz.overlay
  }

  function roundHalfEven(value) { // Python's round(), as captioning.viz.box_heat rounds
    const floor = Math.floor(value);
    const frac = value - floor;
    if (frac !== 0.5) return Math.round(value);
    return floor % 2 === 0 ? floor : floor + 1;
  }

  function boxPixels(box, width, height) {
    const x0 = roundHalfEven(box[0] * width);
    const x1 = roundHalfEven(box[2] * width);
    const y0 = roundHalfEven(box[1] * height);
    const y1 = roundHalfEven(box[3] * height);
    return [Math.max(x0, 0), Math.max(y0, 0), Math.max(x1, x0 + 1), Math.max(y1, y0 + 1)];
  }

  function boxHeat(row, boxes, width, height) { // each pixel: the summed weight of its boxes
    const heat = new Float64Array(width * height);
    row.forEach((weight, i) => {
      if (weight <= 0) return;
      const [x0, y0, x1, y1] = boxPixels(boxes[i], width, height);
      for (let y = y0; y < Math.min(y1, height); y++) {
        for (let x = x0; x < Math.min(x1, width); x++) heat[y * width + x] += weight;
      }
    });
    let high = 0;
    for (const v of heat) high = Math.max(high, v);
    return heat.map((v) => v / Math.max(high, 1e-12));
  }

  function argmax(values) {
    let best = 0;
    for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
    return best;
  }

  function draw(card, word) {
    const { entry, canvas, img } = card;
    const row = entry.attention[word];
    if (!entry.grid && !entry.boxes) {
      card.looking.textContent = "no region geometry to draw";
      return;
    }
    if (entry.image && !(img.complete && img.naturalWidth > 0)) {
      card.pending = word; // drawn once the picture has loaded (it gives the aspect ratio)
      loadPicture(card);
      return;
    }
    const aspect = entry.image ? img.naturalHeight / img.naturalWidth : 1;
    const width = aspect <= 1 ? SIDE : Math.max(1, Math.round(SIDE / aspect));
    const height = Math.max(1, Math.round(width * aspect));
    canvas.width = width;
    canvas.height = height;
    const heat = entry.grid
      ? gridHeat(row, entry.grid, width, height)
      : boxHeat(row, entry.boxes, width, height);
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(width, height);
    heat.forEach((v, i) => {
      const [r, g, b] = ramp(v);
      pixels.data.set([r, g, b, ALPHA], i * 4);
    });
    context.putImageData(pixels, 0, 0);
    const top = argmax(row);
    if (entry.boxes) {
      const [x0, y0, x1, y1] = boxPixels(entry.boxes[top], width, height);
      context.strokeStyle = "#fff";
      context.lineWidth = 2;
      context.strokeRect(x0 + 1, y0 + 1, Math.max(x1 - x0 - 2, 1), Math.max(y1 - y0 - 2, 1));
    }
    const peak = argmax(heat);
    canvas.dataset.word = String(word);
    canvas.dataset.top = String(top);
    canvas.dataset.peak = `${peak % width},${Math.floor(peak / width)}`;
    canvas.dataset.size = `${width}x${height}`;
    const where = entry.grid
      ? `cell (${Math.floor(top / entry.grid[1])}, ${top % entry.grid[1]}) of ${entry.grid[0]}x${entry.grid[1]}`
      : `box ${top + 1} of ${entry.boxes.length} (outlined)`;
    card.looking.textContent = `“${entry.words[word]}”: most weight ${row[top].toFixed(3)} on ${where}`;
  }

  function loadPicture(card) {
    if (card.entry.image && !card.img.getAttribute("src")) card.img.src = card.entry.image;
  }

  function clear(card) {
    card.pending = null;
    card.canvas.getContext("2d").clearRect(0, 0, card.canvas.width, card.canvas.height);
    delete card.canvas.dataset.word;
    card.looking.textContent = "";
  }

  function showWord(card, word) {
    if (word === null) clear(card);
    else draw(card, word);
  }

  function pin(card, word) {
    for (const other of cards) {
      if (other !== card && other.pinned !== null) {
        other.pinned = null;
        other.spans.forEach((s) => s.classList.remove("selected"));
        clear(other);
      }
    }
    card.pinned = word;
    card.spans.forEach((s, i) => s.classList.toggle("selected", i === word));
    showWord(card, word);
  }

  // ------------------------------------------------------------------ cards

  function text(element, value) {
    element.textContent = value;
    return element;
  }

  function formatScore(value) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(3) : "–";
  }

  let imagesLoaded = 0;
  let imagesFailed = 0;
  function countImages() {
    root.dataset.imagesLoaded = String(imagesLoaded);
    root.dataset.imagesFailed = String(imagesFailed);
  }

  function makeCard(entry) {
    const element = template.content.firstElementChild.cloneNode(true);
    const card = {
      entry,
      element,
      img: element.querySelector("img"),
      canvas: element.querySelector("canvas"),
      looking: element.querySelector(".looking"),
      spans: [],
      pinned: null,
      pending: null,
      haystack: [entry.image_id, ...entry.captions, ...entry.references].join("\n").toLowerCase(),
    };
    element.dataset.index = String(entry.index);
    text(element.querySelector(".image-id"), entry.image_id);
    text(element.querySelector(".index"), `#${entry.index}`);
    const picture = element.querySelector(".picture");
    if (entry.image) {
      card.img.alt = entry.image_id;
      card.img.addEventListener("load", () => {
        const { naturalWidth, naturalHeight } = card.img;
        card.img.dataset.naturalWidth = String(naturalWidth);
        if (naturalWidth > 0) { // fit the box, small pictures enlarged; the canvas covers it
          const scale = Math.min(PICTURE_WIDTH / naturalWidth, PICTURE_HEIGHT / naturalHeight);
          picture.style.width = `${Math.round(naturalWidth * scale)}px`;
        }
        if (card.img.naturalWidth > 0) imagesLoaded++;
        else imagesFailed++;
        countImages();
        if (card.pending !== null) draw(card, card.pending);
      });
      card.img.addEventListener("error", () => { imagesFailed++; countImages(); });
    } else {
      card.img.remove();
      picture.classList.add("no-image");
    }
    const caption = element.querySelector(".caption");
    if (!entry.words.length) text(caption, entry.captions[0] || "(empty caption)");
    entry.words.forEach((word, i) => {
      if (i) caption.append(" ");
      const span = text(document.createElement("span"), word);
      span.className = "word";
      span.tabIndex = 0;
      span.addEventListener("mouseenter", () => showWord(card, i));
      span.addEventListener("focus", () => showWord(card, i));
      span.addEventListener("mouseleave", () => showWord(card, card.pinned));
      span.addEventListener("blur", () => showWord(card, card.pinned));
      span.addEventListener("click", () => {
        pin(card, card.pinned === i ? null : i);
        state.show = card.pinned === null ? "" : `${entry.index}.${i}`;
        writeHash();
      });
      span.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); span.click(); }
      });
      caption.append(span);
      card.spans.push(span);
    });
    const alternatives = element.querySelector(".alternatives");
    for (const other of entry.captions.slice(1)) alternatives.append(text(document.createElement("li"), other));
    const references = element.querySelector(".references");
    for (const reference of entry.references) references.append(text(document.createElement("li"), reference));
    const scores = element.querySelector(".scores");
    card.scoreCells = {};
    for (const name of scoreNames) {
      const cell = document.createElement("div");
      cell.append(text(document.createElement("dt"), name));
      cell.append(text(document.createElement("dd"), formatScore((entry.scores || {})[name])));
      scores.append(cell);
      card.scoreCells[name] = cell;
    }
    return card;
  }

  // ------------------------------------------------------------------ filter, sort, hash

  const state = { q: "", sort: "index", order: "asc", range: scoreNames[0] || "", min: "", max: "", show: "" };
  const defaults = { ...state };

  function score(card, name) {
    const value = (card.entry.scores || {})[name];
    return typeof value === "number" && Number.isFinite(value) ? value : null;
  }

  function compare(a, b) {
    const direction = state.order === "desc" ? -1 : 1;
    if (state.sort === "index") return direction * (a.entry.index - b.entry.index);
    const va = score(a, state.sort);
    const vb = score(b, state.sort);
    if (va === null || vb === null) {
      if (va !== vb) return va === null ? 1 : -1; // images without the score last
    } else if (va !== vb) {
      return direction * (va - vb);
    }
    return a.entry.index - b.entry.index;
  }

  function apply() {
    const terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    const min = state.min === "" ? null : Number(state.min);
    const max = state.max === "" ? null : Number(state.max);
    let shown = 0;
    for (const card of cards) {
      let keep = terms.every((term) => card.haystack.includes(term));
      if (keep && state.range && (min !== null || max !== null)) {
        const value = score(card, state.range);
        keep = value !== null && (min === null || value >= min) && (max === null || value <= max);
      }
      card.element.hidden = !keep;
      shown += keep ? 1 : 0;
      for (const [name, cell] of Object.entries(card.scoreCells)) cell.classList.toggle("sorted", name === state.sort);
    }
    const fragment = document.createDocumentFragment();
    for (const card of [...cards].sort(compare)) fragment.append(card.element);
    container.append(fragment);
    text(document.getElementById("count"), `${shown} of ${cards.length} images`);
    root.dataset.shown = String(shown);
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const key of Object.keys(state)) state[key] = params.has(key) ? params.get(key) : defaults[key];
    if (state.sort !== "index" && !scoreNames.includes(state.sort)) state.sort = "index";
    if (!["asc", "desc"].includes(state.order)) state.order = defaults.order;
    if (!scoreNames.includes(state.range)) state.range = defaults.range;
    controls.query.value = state.q;
    controls.sort.value = state.sort;
    controls.order.value = state.order;
    controls.range.value = state.range;
    controls.min.value = state.min;
    controls.max.value = state.max;
  }

  function writeHash() {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(state)) if (value !== defaults[key]) params.set(key, value);
    const hash = params.toString();
    try {
      history.replaceState(null, "", hash ? `#${hash}` : location.pathname + location.search);
    } catch (error) {
      // some browsers refuse replaceState on file:// pages; the view works without the hash
    }
  }

  function applyShow(scroll) {
    const [index, word] = state.show.split(".").map(Number);
    const card = byIndex.get(index);
    if (!card || !Number.isInteger(word) || word < 0 || word >= card.entry.words.length) return;
    pin(card, word);
    if (scroll) card.element.scrollIntoView({ block: "nearest" });
  }

  // ------------------------------------------------------------------ start

  document.title = data.title;
  text(document.getElementById("title"), data.title);
  const summary = document.getElementById("summary");
  for (const [key, value] of Object.entries(data.summary)) {
    const item = document.createElement("div");
    item.append(text(document.createElement("dt"), key));
    item.append(text(document.createElement("dd"), typeof value === "number" ? String(Number(value.toPrecision(4))) : String(value)));
    summary.append(item);
  }
  const option = (value, label) => Object.assign(document.createElement("option"), { value, textContent: label });
  controls.sort.append(option("index", "image order"));
  for (const name of scoreNames) {
    controls.sort.append(option(name, name));
    controls.range.append(option(name, name));
  }
  controls.range.disabled = controls.min.disabled = controls.max.disabled = !scoreNames.length;

  root.dataset.imagesExpected = String(entries.filter((e) => e.image).length);
  countImages();
  const cards = entries.map(makeCard);
  const byIndex = new Map(cards.map((card) => [card.entry.index, card]));
  const cardOf = new Map(cards.map((card) => [card.element, card]));

  const update = () => {
    state.q = controls.query.value;
    state.sort = controls.sort.value;
    state.order = controls.order.value;
    state.range = controls.range.value;
    state.min = controls.min.value;
    state.max = controls.max.value;
    writeHash();
    apply();
  };
  controls.query.addEventListener("input", update);
  for (const name of ["sort", "order", "range", "min", "max"]) controls[name].addEventListener("change", update);
  controls.min.addEventListener("input", update);
  controls.max.addEventListener("input", update);
  window.addEventListener("hashchange", () => { readHash(); apply(); applyShow(true); });

  readHash();
  apply();
  // pictures load as their cards come near the viewport (loading="lazy" is not applied to
  // file:// pages by every browser): a report of thousands of images opens at once
  if ("IntersectionObserver" in window) {
    const observer = new IntersectionObserver((seen) => {
      for (const { isIntersecting, target } of seen) {
        if (isIntersecting) { observer.unobserve(target); loadPicture(cardOf.get(target)); }
      }
    }, { rootMargin: "800px 0px" });
    for (const card of cards) if (card.entry.image) observer.observe(card.element);
  } else {
    cards.forEach(loadPicture);
  }
  applyShow(true);
  root.dataset.ready = "true";
})();
