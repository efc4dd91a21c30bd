// The review desk's own small script: no libraries, works offline.
// Desk.post() sends JSON with the CSRF token; Desk.Photo shows a photo with
// its landmarks in a pan/zoom viewport; Desk.linkViews() makes several
// viewports pan and zoom together (the match page).
'use strict';

const Desk = (() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const COLOURS = ['#ff3030', '#20c020', '#3070ff', '#ffc800', '#ff30ff', '#00e0e0'];

  function csrf() {
    return document.querySelector('meta[name="csrf-token"]').content;
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: 'POST',
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf()},
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {error: 'the server did not answer with JSON (' + response.status + ')'}; }
    data.ok = response.ok && !data.error;
    return data;
  }

  function say(element, text, kind) {
    element.textContent = text;
    element.className = 'flash ' + (kind || '');
    element.hidden = !text;
  }

  // Keys typed into a text field are the user's, never shortcuts.
  function typing(event) {
    const t = event.target;
    return t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable);
  }

  class Photo {
    // viewport: .viewport element holding .pane > img + svg.
    constructor(viewport) {
      this.viewport = viewport;
      this.pane = viewport.querySelector('.pane');
      this.img = this.pane.querySelector('img');
      this.svg = this.pane.querySelector('svg');
      this.names = [];
      this.view = {scale: 1, x: 0, y: 0};   // pan in viewport fractions
      this.setSize(+viewport.dataset.width, +viewport.dataset.height);
      window.addEventListener('resize', () => this.layout());
    }

    setSize(width, height) {
      this.width = width;
      this.height = height;
      this.svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
      this.layout();
    }

    layout() {
      const box = this.viewport.getBoundingClientRect();
      const fit = Math.min(box.width / this.width, box.height / this.height) || 1;
      this.fitWidth = this.width * fit;
      this.fitHeight = this.height * fit;
      this.pane.style.width = this.fitWidth + 'px';
      this.pane.style.height = this.fitHeight + 'px';
      this.offsetX = (box.width - this.fitWidth) / 2;
      this.offsetY = (box.height - this.fitHeight) / 2;
      this.apply();
    }

    apply() {
      const box = this.viewport.getBoundingClientRect();
      const v = this.view;
      this.pane.style.transform =
        `translate(${this.offsetX + v.x * box.width}px, ${this.offsetY + v.y * box.height}px) scale(${v.scale})`;
      this.svg.querySelectorAll('circle').forEach(c => c.setAttribute('r', this.radius() / Math.sqrt(v.scale)));
    }

    radius() { return Math.max(this.width, this.height) / 70; }

    // Photo pixel coordinates of a mouse event (transform included).
    pixel(event) {
      const r = this.img.getBoundingClientRect();
      return [(event.clientX - r.left) / r.width * this.width,
              (event.clientY - r.top) / r.height * this.height];
    }

    // landmarks: [[x, y] | null]; source: the dots' class ('predicted'
    // draws them dashed), one for all or an array with one per landmark.
    draw(landmarks, names, source, current) {
      this.names = names;
      this.svg.replaceChildren();
      landmarks.forEach((point, k) => {
        if (!point) return;
        const dot = document.createElementNS(SVG, 'circle');
        dot.setAttribute('cx', point[0]);
        dot.setAttribute('cy', point[1]);
        dot.setAttribute('r', this.radius() / Math.sqrt(this.view.scale));
        dot.setAttribute('fill', COLOURS[k % COLOURS.length]);
        dot.setAttribute('class', 'dot ' + ((Array.isArray(source) ? source[k] : source) || ''));
        dot.dataset.index = k;
        if (k === current) dot.setAttribute('stroke-width', 3);
        const title = document.createElementNS(SVG, 'title');
        title.textContent = names[k] || ('landmark ' + (k + 1));
        dot.appendChild(title);
        this.svg.appendChild(dot);
        const label = document.createElementNS(SVG, 'text');
        label.setAttribute('x', point[0] + this.radius() * 1.3);
        label.setAttribute('y', point[1] - this.radius() * 1.3);
        label.setAttribute('class', 'dotlabel');
        label.setAttribute('font-size', this.radius() * 1.6);
        label.setAttribute('stroke-width', this.radius() * 0.3);
        label.textContent = names[k] || String(k + 1);
        this.svg.appendChild(label);
      });
    }

    toggleLandmarks() { this.viewport.classList.toggle('no-landmarks'); }
  }

  // Wheel zooms around the cursor, drag pans (with shift, or anywhere on
  // the match page); every linked photo follows.
  function linkViews(photos, options) {
    const opts = Object.assign({dragPans: true}, options || {});
    const view = {scale: 1, x: 0, y: 0};
    const update = () => photos.forEach(p => { p.view = view; p.apply(); });
    photos.forEach(p => { p.view = view; });
    photos.forEach(photo => {
      const vp = photo.viewport;
      vp.addEventListener('wheel', event => {
        event.preventDefault();
        const box = vp.getBoundingClientRect();
        const fx = (event.clientX - box.left) / box.width;
        const fy = (event.clientY - box.top) / box.height;
        const factor = event.deltaY < 0 ? 1.25 : 0.8;
        const scale = Math.min(16, Math.max(1, view.scale * factor));
        const k = scale / view.scale;
        const ox = photo.offsetX / box.width, oy = photo.offsetY / box.height;
        view.x = fx - ox - (fx - ox - view.x) * k;
        view.y = fy - oy - (fy - oy - view.y) * k;
        view.scale = scale;
        if (scale === 1) { view.x = 0; view.y = 0; }
        update();
      }, {passive: false});
      let drag = null;
      vp.addEventListener('mousedown', event => {
        if (!(opts.dragPans || event.shiftKey) || event.target.tagName === 'circle') return;
        drag = {x: event.clientX, y: event.clientY, vx: view.x, vy: view.y};
        event.preventDefault();
      });
      window.addEventListener('mousemove', event => {
        if (!drag) return;
        const box = vp.getBoundingClientRect();
        view.x = drag.vx + (event.clientX - drag.x) / box.width;
        view.y = drag.vy + (event.clientY - drag.y) / box.height;
        update();
      });
      window.addEventListener('mouseup', () => { drag = null; });
    });
    return {view, reset() { view.scale = 1; view.x = 0; view.y = 0; update(); }, update};
  }

  return {post, say, typing, Photo, linkViews, COLOURS};
})();
