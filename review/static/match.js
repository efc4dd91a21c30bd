// The match page: the query beside one candidate at a time, linked pan and
// zoom, landmark overlays, and every decision on a key.
'use strict';
(() => {
  const page = JSON.parse(document.getElementById('match-data').textContent);
  const status = document.getElementById('status');
  const query = new Desk.Photo(document.getElementById('query'));
  const candidateBox = document.getElementById('candidate');
  const candidate = candidateBox ? new Desk.Photo(candidateBox) : null;
  const photos = candidate ? [query, candidate] : [query];
  const view = Desk.linkViews(photos);
  let index = 0;
  let busy = false;

  query.draw(page.query.landmarks, page.names, page.query.source === 'predicted' ? 'predicted' : '');

  function show(i) {
    if (!candidate || !page.candidates.length) return;
    index = (i + page.candidates.length) % page.candidates.length;
    const c = page.candidates[index];
    candidate.img.src = c.url;
    candidate.setSize(c.width, c.height);
    candidate.draw(c.landmarks, page.names, c.source === 'predicted' ? 'predicted' : '');
    document.getElementById('cand-rank').textContent = c.rank;
    const name = document.getElementById('cand-name');
    name.textContent = c.individual;
    name.href = c.individual_url;
    document.getElementById('cand-distance').textContent = c.distance.toFixed(3);
    document.querySelectorAll('.cand-label').forEach(e => { e.textContent = c.individual; });
    document.querySelectorAll('#strip button').forEach((b, k) => b.classList.toggle('current', k === index));
  }

  async function decide(decision) {
    if (busy) return;
    const body = {decision, replaces: page.decided ? page.decided.id : null};
    if (decision === 'same' || decision === 'different') {
      if (!page.candidates.length) return;
      body.candidate_annotation_id = page.candidates[index].annotation_id;
    }
    if (decision === 'new') {
      const field = document.getElementById('new-name');
      body.name = field.value.trim();
      if (!body.name) { Desk.say(status, 'Type the new individual\'s name first, then press Enter.', 'warning'); field.focus(); return; }
    }
    busy = true;
    const answer = await Desk.post(page.decide, body);
    busy = false;
    if (!answer.ok) { Desk.say(status, answer.error, 'error'); return; }
    if (decision === 'different') {
      Desk.say(status, 'Recorded: ' + answer.text + '.');
      show(index + 1);
      return;
    }
    Desk.say(status, 'Recorded: ' + answer.text + '.');
    window.location = answer.next;
  }

  async function undo() {
    if (busy) return;
    busy = true;
    const answer = await Desk.post(page.undo, page.decided ? {review_id: page.decided.id} : {});
    busy = false;
    if (!answer.ok) { Desk.say(status, answer.error, 'error'); return; }
    window.location.reload();
  }

  function toggleLandmarks() {
    photos.forEach(p => p.toggleLandmarks());
    document.getElementById('show-landmarks').checked = !query.viewport.classList.contains('no-landmarks');
  }

  document.querySelectorAll('[data-decision]').forEach(b => b.addEventListener('click', () => decide(b.dataset.decision)));
  document.getElementById('undo').addEventListener('click', undo);
  const undoDecided = document.getElementById('undo-decided');
  if (undoDecided) undoDecided.addEventListener('click', undo);
  document.getElementById('show-landmarks').addEventListener('change', toggleLandmarks);
  document.querySelectorAll('#strip button').forEach(b => b.addEventListener('click', () => show(+b.dataset.index)));
  const nameField = document.getElementById('new-name');
  nameField.addEventListener('keydown', e => {
    if (e.key === 'Enter') { e.preventDefault(); decide('new'); }
    if (e.key === 'Escape') nameField.blur();
  });

  document.addEventListener('keydown', event => {
    if (Desk.typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = {
      '1': () => decide('same'), '2': () => decide('different'), '3': () => decide('cannot_tell'),
      'n': () => nameField.focus(), 'N': () => nameField.focus(),
      'u': () => decide('unidentifiable'), 'U': () => decide('unidentifiable'),
      'z': undo, 'Z': undo, 'l': toggleLandmarks, 'L': toggleLandmarks,
      'ArrowRight': () => show(index + 1), 'ArrowLeft': () => show(index - 1),
      '0': () => view.reset(),
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  });
  show(0);
})();
