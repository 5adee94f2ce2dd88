// The HTML and SVG of `twill explain`, opened in a real browser: headless
// Chromium (Debian's `chromium`, driven by playwright-core; Playwright's own
// browser builds are never downloaded). The page must load with no console
// error and no page error, fetch nothing, hold an element for every namespace,
// bridge and veth of the node and every finding's text, and a screenshot is
// saved (its path is printed) for a person to look at.
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { explain } from '../../src/inspect/explain.js';
import type { Explanation } from '../../src/inspect/model.js';
import { renderHtml, renderSvg } from '../../src/inspect/render.js';
import { RUN_PREFIX } from '../support/hosts.js';
import { buildExplainNode, FLANNEL_MTU, NETWORK, type ExplainNode } from './fixture.js';

const CHROMIUM = '/usr/bin/chromium';
/**
 * This machine's network is closed: without these, Chromium's background
 * services (updates, sync, field trials, QUIC probes) try to connect and log
 * errors of their own. --no-sandbox: the tests run as root.
 */
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
/** Kept after the run (the namespaces and files of the test are not), for a person to look at. */
const SHOT_DIR = join(tmpdir(), 'twill-explain-screenshots');

interface Loaded {
  page: Page;
  /** Console errors and page errors, in the words the browser used. */
  errors: string[];
  /** Every URL the page asked for. */
  requests: string[];
}

describe('twill explain in headless Chromium: the HTML page and the SVG', () => {
  let n: ExplainNode;
  let e: Explanation;
  let ctx: BrowserContext;
  let profile: string;
  before(async () => {
    // Never skipped: a missing browser is a failure that says what to install.
    if (!existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y --no-install-recommends chromium; .ci/run does) to check the HTML output in a browser`);
    }
    n = await buildExplainNode(4);
    // Findings to show: a leaked address (warning) and a pod MTU above FLANNEL_MTU (error).
    writeFileSync(join(n.dataDir, NETWORK, '10.244.1.99'), 'deadbeefcafe\r\neth0');
    await n.pods[1]!.host.handle.setLink('eth0', { mtu: FLANNEL_MTU + 50 });
    e = await explain({ netns: n.node.name, subnetFile: n.subnetFile, cniDataDir: n.dataDir });
    profile = mkdtempSync(join(tmpdir(), 'twill-chromium-'));
    ctx = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 900 } });
  });
  after(async () => {
    await ctx?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await n?.cleanup();
  });

  async function load(file: string): Promise<Loaded> {
    const page = await ctx.newPage();
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (err) => errors.push(`page error: ${err.message}`));
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
    return { page, errors, requests };
  }

  /** A full-page screenshot; of an SVG document, its root element (a full-page capture of a bare SVG document never finishes). */
  async function screenshot(t: TestContext, page: Page, name: string, svgRoot = false): Promise<void> {
    mkdirSync(SHOT_DIR, { recursive: true });
    const path = join(SHOT_DIR, `${RUN_PREFIX}-${name}.png`);
    if (svgRoot) await page.locator('svg').first().screenshot({ path, timeout: 15_000 });
    else await page.screenshot({ path, fullPage: true, timeout: 15_000 });
    assert.ok(statSync(path).size > 10_000, `${path} has a picture in it`);
    t.diagnostic(`screenshot: ${path}`);
  }

  /** Elements matching a CSS selector (attribute values quoted as CSS strings). */
  const count = (page: Page, selector: string) => page.locator(selector).count();
  const attr = (name: string, value: string) => `[${name}=${JSON.stringify(value)}]`;

  it('the HTML page: no console or page errors, nothing fetched, an element for every namespace, bridge, veth and finding', async (t) => {
    assert.ok(e.findings.some((f) => f.id === 'leaked-ip') && e.findings.some((f) => f.id === 'mtu-mismatch'), JSON.stringify(e.findings));
    const file = join(n.dir, 'node.html');
    writeFileSync(file, renderHtml(e));
    const { page, errors, requests } = await load(file);
    try {
      assert.deepEqual(errors, []);
      assert.deepEqual(requests, [pathToFileURL(file).href], 'the page is self-contained');
      assert.equal(await page.title(), `twill explain: ${n.node.name}`);
      for (const ns of e.namespaces) {
        assert.equal(await count(page, `li${attr('data-netns', ns.name)}${attr('data-role', ns.role)}`), 1, `namespace ${ns.name}`);
      }
      assert.equal(e.namespaces.filter((x) => x.role === 'pod').length, 4);
      const nodeLinks = e.links.filter((l) => l.netns === n.node.name && (l.kind === 'bridge' || l.kind === 'veth'));
      assert.deepEqual(nodeLinks.filter((l) => l.kind === 'bridge').map((l) => l.name).sort(), ['cni0', 'docker0']);
      for (const l of nodeLinks) {
        const sel = `${attr('data-link', l.name)}${attr('data-link-netns', l.netns)}${attr('data-kind', l.kind)}`;
        assert.equal(await count(page, `tr${sel}`), 1, `table row of ${l.kind} ${l.name}`);
        // cni0's ports are drawn; docker0 has none, but the bridge itself is.
        assert.equal(await count(page, `svg g${sel}`), 1, `diagram element of ${l.kind} ${l.name}`);
      }
      for (const pod of n.pods) {
        const row = page.locator(`tr${attr('data-link', pod.veth)}`);
        assert.match(await row.innerText(), new RegExp(`eth0 in ${pod.host.name} \\(${pod.ip.replace(/\./g, '\\.')}/24\\)`));
      }
      const shown = await page.$$eval('tr[data-finding]', (rows) =>
        rows.map((r) => ({
          id: r.getAttribute('data-finding'),
          severity: r.getAttribute('data-severity'),
          subject: r.querySelector('[data-field="subject"]')?.textContent,
          message: r.querySelector('[data-field="message"]')?.textContent,
          fix: r.querySelector('[data-field="fix"]')?.textContent,
        })),
      );
      assert.deepEqual(shown, e.findings.map((f) => ({ id: f.id, severity: f.severity, subject: f.subject, message: f.message, fix: f.fix })));
      // Visible, not only in the DOM: the text a person sees holds every finding.
      const visible = await page.locator('#findings').innerText();
      for (const f of e.findings) assert.ok(visible.includes(f.message), `finding ${f.id} is visible`);
      await screenshot(t, page, 'explain-html');
    } finally {
      await page.close();
    }
  });

  it('the SVG alone: no errors, a group for every bridge, veth and pod, the findings', async (t) => {
    const file = join(n.dir, 'node.svg');
    writeFileSync(file, renderSvg(e));
    const { page, errors, requests } = await load(file);
    try {
      assert.deepEqual(errors, []);
      assert.deepEqual(requests, [pathToFileURL(file).href]);
      for (const l of e.links.filter((x) => x.netns === n.node.name && (x.kind === 'bridge' || x.kind === 'veth' || x.kind === 'vxlan'))) {
        assert.equal(await count(page, `g${attr('data-link', l.name)}${attr('data-link-netns', l.netns)}${attr('data-kind', l.kind)}`), 1, `${l.kind} ${l.name}`);
      }
      for (const pod of n.pods) assert.equal(await count(page, `g${attr('data-netns', pod.host.name)}`), 1, `pod ${pod.host.name}`);
      const ids = await page.$$eval('[data-finding]', (els) => els.map((x) => x.getAttribute('data-finding')));
      assert.deepEqual(ids, e.findings.map((f) => f.id));
      // The diagram is laid out, not empty: the bridge bar has a real size.
      const box = await page.locator(`g${attr('data-link', 'cni0')} rect`).boundingBox();
      assert.ok(box && box.width >= 300 && box.height > 20, JSON.stringify(box));
      await screenshot(t, page, 'explain-svg', true);
    } finally {
      await page.close();
    }
  });
});
