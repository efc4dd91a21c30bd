// Annotate: click landmarks in order, drag to correct, keys for the rest.
'use strict';
(() => {
  const data = JSON.parse(document.getElementById('annotate-data').textContent);
  const photo = new Desk.Photo(document.getElementById('photo'));
  const view = Desk.linkViews([photo], {dragPans: false});
  const items = [...document.querySelectorAll('#landmark-list li')];
  const status = document.getElementById('status');
  const points = data.landmarks.map(p => p ? [p[0], p[1]] : null);
  // Which landmarks the reviewer has said something about on this page.
  const touched = points.map(() => false);
  let source = data.source;
  let current = points.findIndex(p => p === null);
  if (current < 0) current = 0;

  function render() {
    // Dashed: the predictor's guesses not yet confirmed; solid: the person's.
    const kinds = points.map((_, k) => (source === 'predicted' && !touched[k]) ? 'predicted' : '');
    photo.draw(points, data.names, kinds, current);
    items.forEach((li, k) => {
      li.classList.toggle('current', k === current);
      li.querySelector('.swatch').style.background = Desk.COLOURS[k % Desk.COLOURS.length];
      li.querySelector('.where').textContent = points[k] ? `(${Math.round(points[k][0])}, ${Math.round(points[k][1])})` : (touched[k] || source ? 'not visible' : '');
    });
    document.getElementById('current-name').textContent = data.names[current];
  }

  function advance() { if (current < points.length - 1) current += 1; }

  let dragging = null;
  photo.viewport.addEventListener('mousedown', event => {
    if (event.shiftKey) return;   // pan
    event.preventDefault();
    if (event.target.tagName === 'circle') {
      dragging = +event.target.dataset.index;
      current = dragging;
      render();
      return;
    }
    const [x, y] = photo.pixel(event);
    if (x < 0 || y < 0 || x > photo.width || y > photo.height) {
      // The margin around the photo: refused here, as the server would.
      Desk.say(status, `${data.names[current]} at (${Math.round(x)}, ${Math.round(y)}) is outside the photo ` +
               `(${photo.width} x ${photo.height} pixels): click on the animal, or mark it not visible (X).`, 'warning');
      return;
    }
    Desk.say(status, '');
    points[current] = [x, y];
    touched[current] = true;
    advance();
    render();
  });
  window.addEventListener('mousemove', event => {
    if (dragging === null) return;
    const [x, y] = photo.pixel(event);   // a drag stops at the photo's edge
    points[dragging] = [Math.min(Math.max(x, 0), photo.width), Math.min(Math.max(y, 0), photo.height)];
    touched[dragging] = true;
    render();
  });
  window.addEventListener('mouseup', () => { dragging = null; });

  async function save() {
    Desk.say(status, 'Saving…');
    const answer = await Desk.post(data.save, {landmarks: points});
    if (!answer.ok) { Desk.say(status, answer.error, 'error'); return; }
    Desk.say(status, 'Saved.');
    window.location = answer.next;
  }

  document.getElementById('save').addEventListener('click', save);
  document.getElementById('not-visible').addEventListener('click', () => { points[current] = null; touched[current] = true; advance(); render(); });
  document.getElementById('clear').addEventListener('click', () => { points[current] = null; render(); });
  items.forEach((li, k) => li.addEventListener('click', () => { current = k; render(); }));

  document.addEventListener('keydown', event => {
    if (Desk.typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (key === 'Enter') save();
    else if (key === 'x' || key === 'X') { points[current] = null; touched[current] = true; advance(); render(); }
    else if (key === 'Delete' || key === 'Backspace') { points[current] = null; render(); }
    else if (key === 'ArrowDown' || key === 'Tab') { current = (current + 1) % points.length; render(); }
    else if (key === 'ArrowUp') { current = (current + points.length - 1) % points.length; render(); }
    else if (key === 'ArrowRight') window.location = document.getElementById('skip').href;
    else if (key === '0') view.reset();
    else return;
    event.preventDefault();
  });
  render();
})();
