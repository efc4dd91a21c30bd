// Import: upload progress (the browser's own), then the server's progress.
'use strict';
(() => {
  const form = document.getElementById('upload-form');
  if (form) {
    form.addEventListener('submit', event => {
      const bar = document.getElementById('upload-progress');
      if (!window.XMLHttpRequest || !bar) return;
      event.preventDefault();
      const request = new XMLHttpRequest();
      request.open('POST', form.action);
      bar.hidden = false;
      request.upload.onprogress = e => { if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; } };
      request.onload = () => {
        // The job page (after the server's redirect), or a page saying why not.
        if (request.responseURL.includes('/import/job/')) { window.location = request.responseURL; return; }
        const page = new DOMParser().parseFromString(request.responseText, 'text/html');
        document.querySelector('main').replaceWith(page.querySelector('main'));
      };
      request.send(new FormData(form));
    });
  }
  const summary = document.getElementById('summary');
  if (!summary) return;
  const body = document.querySelector('#refused tbody');
  async function poll() {
    const state = await (await fetch(summary.dataset.job)).json();
    document.getElementById('progress').value = state.done;
    document.getElementById('count').textContent = state.done + ' / ' + state.total;
    summary.textContent = state.added + ' added' + (state.already.length ? ', ' + state.already.length + ' already in the catalogue' : '') +
      ', ' + state.refused.length + ' refused';
    body.replaceChildren(...state.refused.map(r => {
      const row = document.createElement('tr');
      const file = document.createElement('td'); file.textContent = r.file;
      const reason = document.createElement('td'); reason.textContent = r.reason;
      row.append(file, reason);
      return row;
    }));
    const already = document.getElementById('already');
    already.replaceChildren(...state.already.map(text => {
      const item = document.createElement('li'); item.textContent = text; return item;
    }));
    document.getElementById('already-box').hidden = !state.already.length;
    if (state.finished) { document.getElementById('done').hidden = false; summary.dataset.finished = '1'; }
    else setTimeout(poll, 400);
  }
  poll();
})();
