/*
 * web_page.mjs - the try-it page (api/web/) in headless Chromium, against a
 * real `vitfit serve` on loopback (run by run.sh: meson test web_page).
 *
 * A fresh data_dir holds a small Fashion-MNIST data set (web_fixture: 3
 * classes, real images); the server has an API key.  In the page:
 *   1. it loads without the key (static files are public) under the
 *      Content-Security-Policy default-src 'self', which no part of the page
 *      violates for the whole run; the first API call answers 401 and the
 *      page asks for the key; entering it loads the model summary;
 *   2. the bundled sample picked as a file: the model head's 5 bars equal
 *      `vitfit classify --json` for that file (labels in order, scores to
 *      1e-6); no task is listed yet;
 *   3. a fine-tune job started from the form (2 epochs of 300 images: one
 *      epoch gives each curve a single point) is watched over the event
 *      stream to "succeeded": the progress bar full, a loss curve of >= 3
 *      points and an accuracy point per epoch, every event in the log;
 *   4. the page then classifies the sample with the new task beside the
 *      model head: its bars equal `vitfit classify --task <its file>`; the
 *      tasks table lists it (method, classes, labels);
 *   5. the task file uploaded through the form under another name, listed,
 *      chosen too (three results side by side, the copy equal to the
 *      original), then deleted with the two-click button: gone from the
 *      table and from the server (404);
 *   6. the metrics tiles show the queue depth and the images/s figure.
 * WEB_SCREENSHOT=path saves a full-page screenshot of the final state (the
 * README's docs/web.png; tools/screenshot-web.sh).  Every wait is bounded;
 * any failure prints the server's log tail and exits 1.
 */
import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through meson test web_page`);
  return v;
};
const ROOT = env('VITFIT_SOURCE_ROOT');
const BIN = env('VITFIT_BIN');
const FIXTURE = env('WEB_FIXTURE');
const CHROMIUM = process.env.WEB_CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.WEB_SCREENSHOT || '';
const require = createRequire(join(env('WEB_NPM_DIR'), 'package.json'));
const puppeteer = require('puppeteer-core');

const MODEL = join(ROOT, 'models/fashion-vit-tiny');
const SAMPLE = join(MODEL, 'samples/9_sneaker.png');
const KEY = 'web-test-key-' + process.pid;
const TASK = 'web-shoes';
const COPY = 'web-copy';
const WAIT = 60000;              // bound on any one wait (ms)

/* The job: quick for the test (2 epochs of 300 images, ~2 s; one epoch
 * would give each curve a single point); longer for the screenshot, so its
 * curves show learning (10 classes, where the accuracy is not 100%). */
const JOB = SCREENSHOT
  ? { classes: 10, train: 60, eval: 20, epochs: 6 }
  : { classes: 3, train: 100, eval: 20, epochs: 2 };
const LABELS = ['bag', 'sneaker', 'trouser', 't-shirt', 'pullover', 'dress', 'coat', 'sandal',
  'shirt', 'ankle-boot'].slice(0, JOB.classes).sort(); // a task's labels: its folders' byte order

let checks = 0;
function check(cond, what) {
  checks++;
  if (!cond) throw new Error('check failed: ' + what);
}

const dataDir = mkdtempSync(join(tmpdir(), 'vitfit-web-'));
const logPath = join(dataDir, 'server.log');
let server = null, browser = null, page = null;

/* ---- the server --------------------------------------------------------- */

function startServer() {
  return new Promise((resolve, reject) => {
    const log = openSync(logPath, 'w');
    server = spawn(BIN, ['serve', '--model', MODEL, '--data-dir', dataDir, '--port', '0',
      '--api-key', KEY], { stdio: ['ignore', 'pipe', log] });
    let out = '';
    const timer = setTimeout(() => reject(new Error('no "listening on" line within 60 s')), WAIT);
    server.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    server.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`vitfit serve exited (${code ?? sig}) before listening`));
    });
  });
}

function stopServer() {
  return new Promise((resolve) => {
    if (!server || server.exitCode !== null) return resolve(server ? server.exitCode : 0);
    const timer = setTimeout(() => server.kill('SIGKILL'), 30000);
    server.removeAllListeners('exit');
    server.on('exit', (code, sig) => {
      clearTimeout(timer);
      resolve(code ?? 128 + (sig === 'SIGKILL' ? 9 : 15));
    });
    server.kill('SIGTERM');
  });
}

function logTail() {
  try {
    return readFileSync(logPath, 'utf8').split('\n').slice(-30).join('\n');
  } catch (_) {
    return '(no log)';
  }
}

/* `vitfit classify --json --top-k 5` of the sample, with a task file or not. */
function reference(taskFile) {
  const args = ['classify', '--model', MODEL, '--json', '--top-k', '5'];
  if (taskFile) args.push('--task', taskFile);
  return JSON.parse(execFileSync(BIN, [...args, SAMPLE], { encoding: 'utf8', timeout: WAIT }));
}

/* ---- the page ----------------------------------------------------------- */

const visible = (sel) => page.waitForSelector(sel, { visible: true, timeout: WAIT });
const waitFor = (fn, ...args) => page.waitForFunction(fn, { timeout: WAIT, polling: 100 }, ...args);

async function bars(task) {
  const sel = `.result[data-task="${task}"] .bar`;
  return page.$$eval(sel, (bs) => bs.map((b) => [b.dataset.label, Number(b.dataset.score)]));
}

/* The bars of a task's result equal the CLI's answer. */
function checkBars(what, got, want) {
  check(got.length === Math.min(5, want.labels.length),
    `${what}: ${got.length} bars, want ${Math.min(5, want.labels.length)}`);
  got.forEach(([label, score], i) => {
    check(label === want.labels[i], `${what}: bar ${i} is "${label}", the CLI says "${want.labels[i]}"`);
    check(Math.abs(score - want.scores[i]) <= 1e-6,
      `${what}: bar ${i} (${label}) scores ${score}, the CLI ${want.scores[i]}`);
  });
}

async function run() {
  execFileSync(FIXTURE, [dataDir, String(JOB.classes), String(JOB.train), String(JOB.eval)],
    { stdio: 'inherit', timeout: WAIT });
  const base = await startServer();
  const refHead = reference(null);

  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...(process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : []),
      '--disable-dev-shm-usage', '--no-first-run'],
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1000 });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.evaluateOnNewDocument(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation',
      (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });

  // 1. the page without a key, then the key
  const resp = await page.goto(base + '/', { waitUntil: 'load', timeout: WAIT });
  check(resp.status() === 200, `GET / answered ${resp.status()}`);
  const h = resp.headers();
  check((h['content-security-policy'] || '').includes("default-src 'self'"), 'CSP header: ' + h['content-security-policy']);
  check(h['x-content-type-options'] === 'nosniff', 'nosniff header');
  check(/^text\/html/.test(h['content-type']), 'Content-Type ' + h['content-type']);
  await visible('#key-panel');
  check(!(await page.$eval('#model-summary', (e) => e.textContent)).includes('parameters'),
    'the model summary loaded without the key');
  await page.type('#key-input', KEY);
  await page.click('#key-form button[type=submit]');
  await waitFor(() => document.querySelector('#model-summary').textContent.includes('parameters'));
  check(await page.$eval('#key-panel', (e) => e.hidden), 'the key form is still shown after the key');
  check(await page.evaluate((k) => sessionStorage.getItem('vitfit.apiKey') === k, KEY), 'the key in sessionStorage');

  // 2. the sample, with the model head
  check(await page.$eval('#tasks-empty', (e) => !e.hidden), 'a fresh data_dir lists no task');
  const input = await page.$('#image-file');
  await input.uploadFile(SAMPLE);
  await waitFor(() => document.querySelectorAll('.result[data-task=""] .bar').length > 0);
  checkBars('model head', await bars(''), refHead);
  check(await page.$eval('#preview', (c) => !c.hidden && c.width > 0), 'the preview is drawn');
  console.log(`model head: ${refHead.labels[0]} ${refHead.scores[0]} (as the CLI)`);

  // 3. a fine-tune job, watched to the end
  await page.type('#job-task', TASK);
  await page.type('#job-train', 'fm/train');
  await page.type('#job-eval', 'fm/test');
  for (const [sel, v] of [['#job-epochs', String(JOB.epochs)], ['#job-batch', '16']]) {
    await page.$eval(sel, (e, value) => { e.value = value; }, v);
  }
  const t0 = Date.now();
  await page.click('#job-form button[type=submit]');
  await visible('#job-view');
  await page.waitForFunction(() => ['succeeded', 'failed', 'cancelled'].includes(
    document.querySelector('#job-view').dataset.status), { timeout: 3 * WAIT, polling: 100 });
  const status = await page.$eval('#job-view', (e) => e.dataset.status);
  const message = await page.$eval('#job-message', (e) => e.textContent);
  check(status === 'succeeded', `the job ended ${status}: ${message}`);
  console.log(`job: succeeded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const bar = await page.$eval('#job-bar', (e) => e.style.width);
  check(parseFloat(bar) === 100, 'the progress bar: ' + bar);
  const types = await page.$$eval('#job-log li', (li) => li.map((l) => l.dataset.type));
  const epochs = types.filter((t) => t === 'epoch_end').length; // early stopping may cut a long job
  check(types[0] === 'created' && types.at(-1) === 'succeeded' && types.includes('started') &&
    (epochs === JOB.epochs || (SCREENSHOT && epochs >= 1)), 'the event log: ' + types.join(','));
  const lossPoints = Number(await page.$eval('#loss-chart', (s) => s.dataset.points));
  const lossLines = await page.$$eval('#loss-chart polyline', (p) => p.map((l) => l.getAttribute('points').split(' ').length));
  check(lossPoints >= 3 && lossLines.some((n) => n >= 2), `the loss chart: ${lossPoints} points, lines ${lossLines}`);
  const accPoints = await page.$$eval('#acc-chart polyline[data-series="eval top-1"]', (p) => p.map((l) => l.getAttribute('points').split(' ').length));
  check(accPoints.length === 1 && accPoints[0] === epochs, `the accuracy curve: ${accPoints} (want ${epochs} epochs)`);

  // 4. the new task classifies the sample beside the model head
  const taskFile = join(dataDir, 'tasks', TASK + '.safetensors');
  const refTask = reference(taskFile);
  await waitFor((t) => document.querySelectorAll(`.result[data-task="${t}"] .bar`).length > 0, TASK);
  checkBars(TASK, await bars(TASK), refTask);
  checkBars('model head beside it', await bars(''), refHead);
  console.log(`${TASK}: ${refTask.labels[0]} ${refTask.scores[0]} (as the CLI)`);
  const row = await page.$$eval(`#task-rows tr[data-task="${TASK}"] td`, (td) => td.map((c) => c.textContent));
  check(row.length === 6 && row[1] === 'bitfit' && row[2] === String(JOB.classes) && row[3] === LABELS.join(', '),
    'the tasks table row: ' + JSON.stringify(row));

  // 5. upload the task file under another name, use it, delete it
  await (await page.$('#upload-file')).uploadFile(taskFile);
  check(await page.$eval('#upload-name', (e) => e.value) === TASK, 'the name proposed from the file name');
  await page.$eval('#upload-name', (e) => { e.value = ''; });
  await page.type('#upload-name', COPY);
  await page.click('#upload-form button[type=submit]');
  await visible(`#task-rows tr[data-task="${COPY}"]`);
  const note = await page.$eval('#tasks-status', (e) => e.textContent);
  check(note === `Added ${COPY}: ${JOB.classes} classes.`, 'after the upload: ' + note);
  await page.click(`#task-choice input[value="${COPY}"]`);
  await waitFor((c) => document.querySelectorAll(`.result[data-task="${c}"] .bar`).length > 0 &&
    document.querySelectorAll('.result').length === 3, COPY);
  checkBars(`${COPY} side by side`, await bars(COPY), refTask);
  checkBars(`${TASK} side by side`, await bars(TASK), refTask);
  checkBars('model head side by side', await bars(''), refHead);
  await page.click(`#task-choice input[value="${COPY}"]`); // unchosen again
  await waitFor(() => document.querySelectorAll('.result').length === 2);
  const del = `#task-rows tr[data-task="${COPY}"] button.danger`;
  await page.click(del);
  check(await page.$eval(del, (b) => b.textContent) === 'Sure?', 'the first click asks again');
  await page.click(del);
  await waitFor((c) => !document.querySelector(`#task-rows tr[data-task="${c}"]`), COPY);
  const gone = await fetch(`${base}/v1/tasks/${COPY}`, { headers: { Authorization: 'Bearer ' + KEY } });
  check(gone.status === 404, `GET /v1/tasks/${COPY} after the delete: ${gone.status}`);
  check(await page.$(`#task-rows tr[data-task="${TASK}"]`) !== null, `${TASK} is still listed`);

  // 6. the metrics at a glance (polled every 2 s)
  await waitFor(() => /^\d+$/.test(document.querySelector('#stat-queue').textContent) &&
    /^\d/.test(document.querySelector('#stat-ips').textContent));
  // the job has ended: the next polls say so
  await waitFor(() => document.querySelector('#stat-jobs').textContent === '0 / 0');

  const csp = await page.evaluate(() => window.__csp);
  check(csp.length === 0, 'Content-Security-Policy violations: ' + csp.join('; '));
  check(pageErrors.length === 0, 'errors in the page: ' + pageErrors.join('; '));
  if (SCREENSHOT) {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log('screenshot: ' + SCREENSHOT);
  }
}

const guard = setTimeout(() => {
  console.error('web_page: over 240 s: giving up');
  if (server) server.kill('SIGKILL');
  process.exit(1);
}, 240000);
guard.unref();

let failed = false;
try {
  await run();
} catch (e) {
  failed = true;
  console.error('web_page: FAILED: ' + (e && e.stack ? e.stack : e));
  if (page) {
    const shot = join(tmpdir(), `vitfit-web-failure-${process.pid}.png`);
    try {
      await page.screenshot({ path: shot, fullPage: true });
      writeFileSync(shot + '.html', await page.content());
      console.error(`web_page: the page at the failure: ${shot} (+ .html)`);
    } catch (_) { /* the browser is gone */ }
  }
}
if (browser) await browser.close().catch(() => {});
const code = await stopServer();
if (code !== 0) {
  failed = true;
  console.error(`web_page: vitfit serve exited ${code} after SIGTERM`);
}
if (failed) console.error('---- server log (tail) ----\n' + logTail());
else rmSync(dataDir, { recursive: true, force: true });
console.log(`web_page: ${checks} checks, ${failed ? 'FAILED' : 'all passed'}`);
process.exit(failed ? 1 : 0);
