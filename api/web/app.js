/*
 * app.js - the try-it page of vitfit (index.html): classify an image with
 * one or several tasks, manage tasks, run and watch a fine-tune job, and the
 * server's load at a glance.  Plain browser JavaScript, no framework, no
 * build step; only the HTTP API of DESIGN.md section 4 is used, with its
 * shapes as they are.
 *
 * The API key: the first reply 401 opens the key form; the key is kept in
 * sessionStorage (this tab only) and sent as "Authorization: Bearer".  That
 * is also why the job's event stream is read with fetch() and not with
 * EventSource, which cannot send the header.
 */
'use strict';

(() => {
  const KEY_STORE = 'vitfit.apiKey';
  const TOP_K = 5;
  const HEAD = '';               // the task choice meaning "the model's own head"
  const FINAL = new Set(['succeeded', 'failed', 'cancelled']);

  const $ = (id) => document.getElementById(id);

  /* ---- HTTP ------------------------------------------------------------ */

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // what runs again once a key is entered: reads and the classify of the
  // image on show; an upload or a job is not repeated behind the user's back
  let keyWaiters = [];

  function authHeaders(headers) {
    const h = new Headers(headers || {});
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) h.set('Authorization', 'Bearer ' + key);
    return h;
  }

  /* fetch() with the key; a non-2xx reply becomes an ApiError carrying the
   * server's {"error": {"code", "message"}}.  A 401 also opens the key form. */
  async function api(path, opts = {}) {
    const res = await fetch(path, { ...opts, headers: authHeaders(opts.headers) });
    if (res.ok) return res;
    let code = 'http_' + res.status, message = res.status + ' ' + res.statusText;
    try {
      const body = await res.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch (_) { /* not JSON: keep the status line */ }
    if (res.status === 401) askForKey(sessionStorage.getItem(KEY_STORE) !== null);
    throw new ApiError(res.status, code, message);
  }

  const apiJson = async (path, opts) => (await api(path, opts)).json();

  function askForKey(refused) {
    $('key-panel').hidden = false;
    $('key-note').textContent = refused
      ? 'the server refused this key: enter it again'
      : 'kept in this tab only (sessionStorage)';
    $('key-note').classList.toggle('error', refused);
    if (document.activeElement !== $('key-input')) $('key-input').focus();
  }

  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_STORE, $('key-input').value.trim());
    $('key-input').value = '';
    $('key-panel').hidden = true;
    const waiting = keyWaiters;
    keyWaiters = [];
    refreshAll();
    for (const fn of new Set(waiting)) fn().catch(() => {});
  });

  function setStatus(el, text, kind) {
    el.textContent = text;
    el.classList.toggle('error', kind === 'error');
    el.classList.toggle('ok', kind === 'ok');
  }

  const errorText = (e) => (e instanceof ApiError ? `${e.message} (${e.code})` : String(e.message || e));

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('data-')) node.dataset[k.slice(5).replace(/-(.)/g, (_, c) => c.toUpperCase())] = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  function formatBytes(n) {
    if (n < 1024) return n + ' B';
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1024 / 1024).toFixed(1) + ' MiB';
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  /* ---- the model ------------------------------------------------------- */

  let model = null;              // GET /v1/model

  async function loadModel() {
    model = await apiJson('/v1/model');
    const m = model;
    const params = m.parameters >= 1e6 ? (m.parameters / 1e6).toFixed(2) + ' M' : m.parameters.toLocaleString();
    $('model-summary').textContent =
      `ViT ${m.depth}\u00d7${m.width}, patch ${m.patch_size}, ${m.image_size}px \u00b7 ${params} parameters` +
      ` \u00b7 ${m.num_classes} classes \u00b7 ${m.precision}`;
    renderTaskChoice();
  }

  /* ---- tasks ----------------------------------------------------------- */

  let tasks = [];                // [{name, bytes, method, num_classes, labels}]
  const chosen = new Set([HEAD]); // the tasks to classify with

  async function loadTasks() {
    const list = (await apiJson('/v1/tasks')).tasks;
    const details = await Promise.all(list.map(async (t) => {
      try {
        return { ...t, ...(await apiJson('/v1/tasks/' + encodeURIComponent(t.name))) };
      } catch (e) {
        return { ...t, error: errorText(e) };
      }
    }));
    tasks = details;
    for (const name of [...chosen]) if (name !== HEAD && !tasks.some((t) => t.name === name)) chosen.delete(name);
    renderTasks();
    renderTaskChoice();
  }

  function renderTasks() {
    const rows = $('task-rows');
    rows.replaceChildren();
    for (const t of tasks) {
      const del = el('button', { type: 'button', class: 'danger', text: 'Delete' });
      del.addEventListener('click', () => deleteTask(t.name, del));
      const labels = t.labels ? t.labels.join(', ') : (t.error || '');
      rows.append(el('tr', { 'data-task': t.name },
        el('td', { text: t.name }),
        el('td', { text: t.method || '' }),
        el('td', { class: 'num', text: t.num_classes != null ? String(t.num_classes) : '' }),
        el('td', { class: 'labels', text: labels, title: labels }),
        el('td', { class: 'num', text: formatBytes(t.bytes) }),
        el('td', {}, del)));
    }
    $('tasks-empty').hidden = tasks.length > 0;
  }

  function renderTaskChoice() {
    const box = $('task-choice');
    box.replaceChildren();
    const options = [];
    if (!model || model.num_classes > 0) options.push({ value: HEAD, text: 'model head' });
    else chosen.delete(HEAD);
    for (const t of tasks) options.push({ value: t.name, text: t.name });
    if (chosen.size === 0 && options.length) chosen.add(options[0].value);
    for (const o of options) {
      const cb = el('input', { type: 'checkbox', value: o.value });
      cb.checked = chosen.has(o.value);
      cb.addEventListener('change', () => {
        if (cb.checked) chosen.add(o.value);
        else chosen.delete(o.value);
        if (currentImage) classify(currentImage);
      });
      box.append(el('label', {}, cb, o.text));
    }
  }

  /* Deleting asks for a second click within a few seconds. */
  async function deleteTask(name, button) {
    if (!button.classList.contains('armed')) {
      button.classList.add('armed');
      button.textContent = 'Sure?';
      setTimeout(() => {
        button.classList.remove('armed');
        button.textContent = 'Delete';
      }, 4000);
      return;
    }
    button.disabled = true;
    try {
      await api('/v1/tasks/' + encodeURIComponent(name), { method: 'DELETE' });
      setStatus($('tasks-status'), `Deleted ${name}.`, 'ok');
      chosen.delete(name);
      await loadTasks();
    } catch (e) {
      setStatus($('tasks-status'), `Delete ${name}: ${errorText(e)}`, 'error');
      button.disabled = false;
    }
  }

  /* A task name from a file name: lower case, the name's allowed bytes. */
  function nameFromFile(file) {
    return file.replace(/\.safetensors$/i, '').toLowerCase().replace(/[^a-z0-9._-]+/g, '-')
      .replace(/^[^a-z0-9]+/, '').slice(0, 64);
  }

  $('upload-file').addEventListener('change', () => {
    const f = $('upload-file').files[0];
    if (f && !$('upload-name').value) $('upload-name').value = nameFromFile(f.name);
  });

  $('upload-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const file = $('upload-file').files[0], name = $('upload-name').value.trim();
    if (!file || !name) return;
    setStatus($('tasks-status'), `Uploading ${name}\u2026`);
    try {
      const res = await api('/v1/tasks/' + encodeURIComponent(name), {
        method: 'PUT', headers: { 'Content-Type': 'application/octet-stream' }, body: file,
      });
      const t = await res.json();
      setStatus($('tasks-status'),
        `${res.status === 201 ? 'Added' : 'Replaced'} ${t.name}: ${t.num_classes} classes.`, 'ok');
      $('upload-form').reset();
      await loadTasks();
    } catch (e) {
      setStatus($('tasks-status'), `Upload: ${errorText(e)}`, 'error');
    }
  });

  /* ---- classify -------------------------------------------------------- */

  let currentImage = null;       // the Blob last dropped, pasted or picked
  let classifySeq = 0;           // only the newest request's answer is shown

  async function showPreview(blob) {
    const canvas = $('preview');
    try {
      // a bitmap, not an <img src="blob:...">: the policy allows no blob: URLs
      const bmp = await createImageBitmap(blob);
      const scale = Math.min(224 / bmp.width, 224 / bmp.height);
      canvas.width = Math.max(1, Math.round(bmp.width * scale));
      canvas.height = Math.max(1, Math.round(bmp.height * scale));
      const ctx = canvas.getContext('2d');
      ctx.imageSmoothingEnabled = scale < 1;
      ctx.drawImage(bmp, 0, 0, canvas.width, canvas.height);
      bmp.close();
      canvas.hidden = false;
    } catch (_) {
      canvas.hidden = true;      // the browser cannot show it; the server may still read it
    }
  }

  function takeImage(blob) {
    if (!blob) return;
    currentImage = blob;
    showPreview(blob);
    classify(blob);
  }

  /* One POST /v1/classify with the image as the raw body: the named tasks
   * in one request ("tasks" when several), the model head in another (the
   * API runs the head only when no task is named). */
  async function classify(blob) {
    const seq = ++classifySeq;
    const names = [...chosen].filter((n) => n !== HEAD);
    const calls = [];
    if (chosen.has(HEAD)) calls.push({ query: '' });
    if (names.length === 1) calls.push({ query: '&task=' + encodeURIComponent(names[0]) });
    if (names.length > 1) calls.push({ query: '&tasks=' + names.map(encodeURIComponent).join(',') });
    if (calls.length === 0) {
      setStatus($('classify-status'), 'Choose a task.', 'error');
      return;
    }
    setStatus($('classify-status'), 'Classifying\u2026');
    const t0 = performance.now();
    const answers = await Promise.all(calls.map(async (c) => {
      try {
        const body = await apiJson(`/v1/classify?top_k=${TOP_K}${c.query}`, {
          method: 'POST',
          headers: { 'Content-Type': blob.type || 'application/octet-stream' },
          body: blob,
        });
        return body.results || [body];
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) keyWaiters.push(() => classify(currentImage));
        return [{ error: e, task: c.query ? names.join(', ') : null }];
      }
    }));
    if (seq !== classifySeq) return;
    const results = answers.flat();
    renderResults(results);
    const failed = results.filter((r) => r.error);
    if (failed.length) setStatus($('classify-status'), errorText(failed[0].error), 'error');
    else setStatus($('classify-status'), `Top ${TOP_K} in ${Math.round(performance.now() - t0)} ms.`, 'ok');
  }

  function renderResults(results) {
    const box = $('results');
    box.replaceChildren();
    for (const r of results) {
      const card = el('div', { class: 'result' + (r.error ? ' failed' : ''), 'data-task': r.task || '' },
        el('h3', { text: r.task || 'model head' }));
      if (r.error) {
        card.append(el('p', { class: 'small', text: errorText(r.error) }));
      } else {
        r.labels.forEach((label, i) => {
          const fill = el('div', { class: 'fill' });
          fill.style.width = (100 * r.scores[i]).toFixed(1) + '%';
          card.append(el('div', { class: 'bar', 'data-label': label, 'data-score': String(r.scores[i]) },
            el('span', { class: 'label', text: label, title: label }),
            el('div', { class: 'track' }, fill),
            el('span', { class: 'score', text: (100 * r.scores[i]).toFixed(1) + '%' })));
        });
      }
      box.append(card);
    }
  }

  const drop = $('drop');
  drop.addEventListener('dragover', (ev) => {
    ev.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    takeImage(ev.dataTransfer.files[0]);
  });
  drop.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') $('image-file').click();
  });
  $('image-file').addEventListener('change', () => {
    takeImage($('image-file').files[0]);
    $('image-file').value = '';  // the same file picked again still fires change
  });
  document.addEventListener('paste', (ev) => {
    if (ev.target instanceof HTMLInputElement) return;
    for (const item of ev.clipboardData.items) {
      if (item.kind === 'file' && item.type.startsWith('image/')) {
        ev.preventDefault();
        takeImage(item.getAsFile());
        return;
      }
    }
  });

  /* ---- charts ---------------------------------------------------------- */

  const SVG = 'http://www.w3.org/2000/svg';

  function svgEl(tag, attrs, text) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text != null) n.textContent = text;
    return n;
  }

  const tick = (v) => (Number.isInteger(v) || Math.abs(v) >= 100 ? v.toFixed(0)
    : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3));

  /* Draws series [{name, points: [[x, y]...]}] into svg (its viewBox is
   * 600 x 240), axes scaled to the data or to the bounds in opts (xMin, xMax,
   * yMin, yMax), a dot on every point so that a single one shows. */
  function drawChart(svg, series, opts) {
    const W = 600, H = 240, L = 48, R = 12, T = 26, B = 28;
    svg.replaceChildren();
    const all = series.flatMap((s) => s.points);
    svg.dataset.points = String(all.length);
    svg.append(svgEl('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }),
      svgEl('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }));
    if (all.length === 0) {
      svg.append(svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'waiting for data'));
      return;
    }
    let x0 = Math.min(opts.xMin ?? Infinity, ...all.map((p) => p[0]));
    let x1 = Math.max(opts.xMax ?? -Infinity, ...all.map((p) => p[0]));
    let y0 = opts.yMin ?? Math.min(...all.map((p) => p[1])), y1 = opts.yMax ?? Math.max(...all.map((p) => p[1]));
    if (opts.yMin === undefined && y0 > 0 && y0 < (y1 - y0) * 0.5) y0 = 0;
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    if (opts.yMax !== undefined && y1 > opts.yMax) { y0 -= y1 - opts.yMax; y1 = opts.yMax; }
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
    svg.append(svgEl('text', { x: L - 4, y: T + 4, 'text-anchor': 'end' }, tick(y1)),
      svgEl('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, tick(y0)),
      svgEl('text', { x: L, y: H - 8, 'text-anchor': 'start' }, opts.xLabel + ' ' + tick(x0)),
      svgEl('text', { x: W - R, y: H - 8, 'text-anchor': 'end' }, tick(x1)));
    let legendX = L + 4;
    series.forEach((s, i) => {
      if (s.points.length === 0) return;
      const pts = [...s.points].sort((a, b) => a[0] - b[0]);
      svg.append(svgEl('polyline', {
        class: `line s${i}`, 'data-series': s.name,
        points: pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' '),
      }));
      for (const p of pts) svg.append(svgEl('circle', { class: `s${i}`, cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 2.5 }));
      const label = svgEl('text', { class: `s${i}`, x: legendX, y: 14 }, s.name);
      svg.append(label);
      legendX += 16 + 7 * s.name.length;
    });
  }

  /* ---- fine-tune jobs -------------------------------------------------- */

  let watch = null;              // the job being watched: its state and stream

  function newWatch(id) {
    return {
      id, after: 0, status: '', task: '', done: false, abort: new AbortController(),
      totalSteps: null, epochs: null, stepLoss: [], epochLoss: [], evalLoss: [], top1: [],
    };
  }

  function drawJobCharts(w) {
    drawChart($('loss-chart'), [
      { name: 'train (recent steps)', points: w.stepLoss },
      { name: 'train (epoch)', points: w.epochLoss },
      { name: 'eval', points: w.evalLoss },
    ], { xLabel: 'step', xMin: 0, xMax: w.totalSteps ?? undefined });
    drawChart($('acc-chart'), [{ name: 'eval top-1', points: w.top1 }],
      { xLabel: 'epoch', xMin: 1, xMax: w.epochs ?? undefined, yMax: 1 });
  }

  function showJob(w, job) {
    $('job-view').hidden = false;
    $('job-id').textContent = `${job.id} \u2192 ${job.task}`;
    w.task = job.task;
    setJobState(w, job.status);
    const p = job.progress || {};
    if (p.total_steps) setProgress(p.step, p.total_steps);
    w.totalSteps = p.total_steps || null;
    w.epochs = (job.hyperparameters && job.hyperparameters.epochs) || null;
    if (job.error) $('job-message').textContent = `${job.error.code}: ${job.error.message}`;
  }

  function setJobState(w, status) {
    w.status = status;
    const badge = $('job-state');
    badge.textContent = status;
    badge.className = 'badge ' + status;
    $('job-cancel').hidden = FINAL.has(status);
    $('job-use').hidden = status !== 'succeeded';
    $('job-use').textContent = `Classify with ${w.task}`;
    $('job-view').dataset.status = status;
  }

  function setProgress(step, total) {
    $('job-bar').style.width = (total > 0 ? (100 * Math.min(step, total)) / total : 0).toFixed(1) + '%';
  }

  /* One event of the stream (the same object GET .../events lists). */
  function onEvent(w, e) {
    if (typeof e.id === 'number') w.after = Math.max(w.after, e.id);
    const d = e.data || {};
    $('job-message').textContent = e.message || e.type;
    const log = $('job-log');
    log.append(el('li', { 'data-type': e.type, text: `${e.type}: ${e.message || ''}` }));
    while (log.children.length > 200) log.firstChild.remove();
    log.scrollTop = log.scrollHeight;
    switch (e.type) {
      case 'started':
      case 'resumed':
        setJobState(w, 'running');
        break;
      case 'progress':
        setProgress(d.step, d.total_steps);
        w.totalSteps = d.total_steps || w.totalSteps;
        if (Number.isFinite(d.loss)) w.stepLoss.push([d.step, d.loss]);
        break;
      case 'epoch_end':
        setProgress(d.step, d.total_steps);
        if (Number.isFinite(d.train_loss)) w.epochLoss.push([d.step, d.train_loss]);
        if (Number.isFinite(d.eval_loss)) w.evalLoss.push([d.step, d.eval_loss]);
        w.totalSteps = d.total_steps || w.totalSteps;
        if (Number.isFinite(d.eval_top1)) w.top1.push([d.epoch, d.eval_top1]);
        break;
      case 'succeeded':
      case 'failed':
      case 'cancelled':
        w.done = true;
        setJobState(w, e.type);
        if (e.type === 'succeeded') setProgress(1, 1);
        if (e.type === 'failed' && d.error) $('job-message').textContent = `${d.error.code}: ${d.error.message}`;
        finished(w, e.type);
        break;
      default:
        break;
    }
    drawJobCharts(w);
  }

  /* Reads GET /v1/finetune/{id}/events as text/event-stream from w.after
   * until the server ends it (after the final event) or w is replaced. */
  async function readStream(w) {
    const res = await api(`/v1/finetune/${encodeURIComponent(w.id)}/events?after=${w.after}`, {
      headers: { Accept: 'text/event-stream' }, signal: w.abort.signal,
    });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let cut;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, '');
        const data = frame.split(/\r?\n/).filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue;     // a ": keep-alive" comment
        try {
          onEvent(w, JSON.parse(data));
        } catch (err) {
          console.warn('vitfit: an event that is not JSON', err);
        }
      }
    }
  }

  async function watchJob(id) {
    if (watch) watch.abort.abort();
    const w = (watch = newWatch(id));
    $('job-log').replaceChildren();
    setProgress(0, 1);
    drawJobCharts(w);
    highlightJobRow();
    try {
      showJob(w, await apiJson('/v1/finetune/' + encodeURIComponent(id)));
    } catch (e) {
      setStatus($('job-status'), `Job ${id}: ${errorText(e)}`, 'error');
      return;
    }
    // the stream ends after the final event; a dropped connection resumes
    // from the last event seen
    while (!w.done && watch === w) {
      try {
        await readStream(w);
      } catch (e) {
        if (w.abort.signal.aborted) return;
        if (e instanceof ApiError && e.status === 401) {
          keyWaiters.push(() => watchJob(id));
          return;
        }
        if (e instanceof ApiError && e.status < 500 && e.status !== 429) {
          setStatus($('job-status'), `Events of ${id}: ${errorText(e)}`, 'error');
          return;
        }
      }
      if (!w.done && watch === w) await sleep(1000);
    }
  }

  async function finished(w, status) {
    loadJobs().catch(() => {});
    if (status !== 'succeeded') return;
    setStatus($('job-status'), `Job ${w.id} succeeded: task ${w.task} is ready.`, 'ok');
    await loadTasks().catch(() => {});
    useTask(w.task);
  }

  /* Classifies the current image with task name (added to the choice). */
  function useTask(name) {
    chosen.add(name);
    renderTaskChoice();
    if (currentImage) classify(currentImage);
    else setStatus($('classify-status'), `Task ${name} chosen: drop an image to try it.`);
  }

  $('job-use').addEventListener('click', () => watch && useTask(watch.task));

  $('job-cancel').addEventListener('click', async () => {
    if (!watch) return;
    try {
      await api(`/v1/finetune/${encodeURIComponent(watch.id)}/cancel`, { method: 'POST' });
    } catch (e) {
      setStatus($('job-status'), `Cancel: ${errorText(e)}`, 'error');
    }
  });

  $('job-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = {
      task: $('job-task').value.trim(),
      train: $('job-train').value.trim(),
      method: $('job-method').value,
      epochs: parseInt($('job-epochs').value, 10),
      batch_size: parseInt($('job-batch').value, 10),
    };
    if ($('job-eval').value.trim()) body.eval = $('job-eval').value.trim();
    if ($('job-lr').value.trim()) body.lr = parseFloat($('job-lr').value);
    setStatus($('job-status'), 'Submitting\u2026');
    try {
      const job = await apiJson('/v1/finetune', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
      });
      setStatus($('job-status'), `Job ${job.id} ${job.status}.`, 'ok');
      loadJobs().catch(() => {});
      watchJob(job.id);
    } catch (e) {
      setStatus($('job-status'), `Start: ${errorText(e)}`, 'error');
    }
  });

  async function loadJobs() {
    const list = await apiJson('/v1/finetune?limit=10');
    const rows = $('job-rows');
    rows.replaceChildren();
    for (const j of list.data) {
      const p = j.progress || {};
      const top1 = j.metrics && j.metrics.eval_top1 != null ? (100 * j.metrics.eval_top1).toFixed(1) + '%' : '';
      const tr = el('tr', { class: 'clickable', 'data-job': j.id },
        el('td', { text: j.id }), el('td', { text: j.task }), el('td', { text: j.status }),
        el('td', { class: 'num', text: p.total_steps ? `${p.step}/${p.total_steps}` : '' }),
        el('td', { class: 'num', text: top1 }));
      tr.addEventListener('click', () => watchJob(j.id));
      rows.append(tr);
    }
    highlightJobRow();
  }

  function highlightJobRow() {
    for (const tr of $('job-rows').children) tr.classList.toggle('watched', !!watch && tr.dataset.job === watch.id);
  }

  /* ---- metrics at a glance --------------------------------------------- */

  let lastImages = null;         // {count, t} of the previous poll

  /* Prometheus text: the sum of each family's samples, by metric name (and
   * name{labels} for the labelled ones). */
  function parseMetrics(text) {
    const out = new Map();
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const v = parseFloat(m[3]);
      out.set(m[1], (out.get(m[1]) || 0) + v);
      if (m[2]) out.set(m[1] + m[2], v);
    }
    return out;
  }

  async function pollMetrics() {
    const m = parseMetrics(await (await api('/metrics')).text());
    const now = performance.now(), images = m.get('vitfit_images_total') || 0;
    if (lastImages && now > lastImages.t) {
      const rate = Math.max(0, (images - lastImages.count) / ((now - lastImages.t) / 1000));
      $('stat-ips').textContent = rate.toFixed(rate < 10 ? 1 : 0);
    }
    lastImages = { count: images, t: now };
    $('stat-queue').textContent = String(m.get('vitfit_queue_depth') ?? '\u2013');
    $('stat-active').textContent = String(m.get('vitfit_active_requests') ?? '\u2013');
    const train = m.get('vitfit_finetune_images_per_second');
    const running = m.get('vitfit_finetune_jobs{status="running"}') || 0;
    $('stat-train').textContent = running > 0 && train != null ? train.toFixed(0) : '\u2013';
    $('stat-jobs').textContent = `${running} / ${m.get('vitfit_finetune_jobs{status="queued"}') || 0}`;
  }

  let metricsTimer = null;
  function startMetrics() {
    if (metricsTimer) return;
    const tickMetrics = async () => {
      metricsTimer = null;
      if (!document.hidden) {
        try {
          await pollMetrics();
        } catch (e) {
          if (e instanceof ApiError && e.status === 401) {
            keyWaiters.push(async () => startMetrics());
            return;              // resumes once a key is entered
          }
        }
      }
      metricsTimer = setTimeout(tickMetrics, 2000);
    };
    metricsTimer = setTimeout(tickMetrics, 0);
  }

  /* ---- start ----------------------------------------------------------- */

  async function refreshAll() {
    const steps = [loadModel(), loadTasks(), loadJobs()];
    const results = await Promise.allSettled(steps);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed && !(failed.reason instanceof ApiError && failed.reason.status === 401)) {
      setStatus($('tasks-status'), errorText(failed.reason), 'error');
    }
    if (failed && failed.reason instanceof ApiError && failed.reason.status === 503) {
      setTimeout(refreshAll, 1000);  // the model is still loading
    }
  }

  refreshAll();
  startMetrics();
})();
