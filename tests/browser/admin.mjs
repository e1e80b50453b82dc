// Drives the admin web UI in headless Chromium: sign in (a wrong password
// first), see the node and its counts, watch a new connection appear without
// a reload, open a channel, publish into it, disconnect a user, broadcast.
//   node admin.mjs <base-url> <screenshot-dir> <password> <connect-token>
// Prints one JSON summary on stdout; exits 1 on failure.
import { join } from "node:path";
import { forwardConsole, launch } from "./browser.mjs";

const [base, shots, password, token] = process.argv.slice(2);
const TIMEOUT = 15000;

async function waitText(page, selector, text) {
  await page.waitForFunction(
    ([s, t]) => [...document.querySelectorAll(s)].some((el) => el.textContent.includes(t)),
    [selector, text],
    { timeout: TIMEOUT },
  );
}

async function waitTotal(page, key, value) {
  await page.waitForFunction(
    ([k, v]) => document.querySelector(`[data-total=${k}]`).textContent === v,
    [key, String(value)],
    { timeout: TIMEOUT },
  );
}

const rows = (page, selector) =>
  page.$$eval(selector, (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent)));

const browser = await launch();
let ok = false;
try {
  const page = await browser.context.newPage();
  forwardConsole(page, "admin");
  await page.goto(base + "/");
  await page.waitForSelector("#signin-view:not([hidden])", { timeout: TIMEOUT });
  const summary = { reloads: 0 };
  page.on("load", () => summary.reloads++);
  await page.screenshot({ path: join(shots, "admin-signin.png") });

  await page.fill("#password", "not the password");
  await page.click("#signin button[type=submit]");
  await waitText(page, "#signin-error", "Wrong password.");
  summary.wrongPassword = await page.textContent("#signin-error");

  await page.fill("#password", password);
  await page.click("#signin button[type=submit]");
  await page.waitForSelector("#app:not([hidden])", { timeout: TIMEOUT });
  await page.waitForSelector("#nodes tbody tr", { timeout: TIMEOUT });
  await waitTotal(page, "num_clients", 6);
  summary.nodes = await rows(page, "#nodes tbody tr");
  await page.screenshot({ path: join(shots, "admin-overview.png") });

  // A new client (in another page) shows up with the next poll, no reload.
  const other = await browser.context.newPage();
  forwardConsole(other, "client");
  await other.goto(base + "/admin/static/favicon.svg");
  await other.evaluate(
    ([url, t]) => {
      window.closeCode = null;
      const ws = new WebSocket(url);
      ws.onopen = () => {
        ws.send(JSON.stringify({ id: 1, connect: { token: t } }));
        ws.send(JSON.stringify({ id: 2, subscribe: { channel: "room:lobby" } }));
      };
      ws.onclose = (event) => (window.closeCode = event.code);
    },
    [base.replace(/^http/, "ws") + "/connection/websocket", token],
  );
  await waitTotal(page, "num_clients", 7);
  summary.liveTotal = await page.textContent("[data-total=num_clients]");

  await page.click("#nav a[data-view=channels]");
  await page.waitForSelector("#channels tbody tr", { timeout: TIMEOUT });
  await page.waitForFunction(
    () => [...document.querySelectorAll("#channels tbody tr")].some((tr) => tr.textContent === "room:lobby3"),
    null,
    { timeout: TIMEOUT },
  );
  summary.channels = await rows(page, "#channels tbody tr");
  await page.screenshot({ path: join(shots, "admin-channels.png") });

  await page.click("#channels a.channel-link:text-is('room:lobby')");
  await page.waitForFunction(() => document.querySelectorAll("#presence tbody tr").length === 3, null, {
    timeout: TIMEOUT,
  });
  await page.waitForSelector("#history li", { timeout: TIMEOUT });
  await page.fill("#channel-publish-data", '{"text": "Hello from the admin UI"}');
  await page.click("#channel-publish button[type=submit]");
  await waitText(page, "#history li:first-child code", "Hello from the admin UI");
  summary.title = await page.textContent("#channel-title");
  summary.presence = (await rows(page, "#presence tbody tr")).map((r) => r[0]);
  summary.history = await page.$$eval("#history li code", (els) => els.map((el) => el.textContent));
  await page.screenshot({ path: join(shots, "admin-channel.png") });

  await page.click("#nav a[data-view=actions]");
  await page.fill("#disconnect-user", "dave");
  await page.click("#disconnect button[type=submit]");
  await waitText(page, "#results li", "Disconnected every connection of dave.");
  await other.waitForFunction(() => window.closeCode !== null, null, { timeout: TIMEOUT });
  summary.daveClosed = await other.evaluate(() => window.closeCode);
  await page.fill("#broadcast-channels", "room:lobby\nnews:updates");
  await page.fill("#broadcast-data", '{"text": "Maintenance at 22:00"}');
  await page.click("#broadcast button[type=submit]");
  await waitText(page, "#results li", "Broadcast to 2 channels.");
  await page.fill("#publish-channel", "room:random");
  await page.fill("#publish-data", "{not json");
  await page.click("#publish button[type=submit]");
  await waitText(page, "#results li", "Data is not valid JSON");
  await page.fill("#publish-data", '{"text": "hi"}');
  await page.click("#publish button[type=submit]");
  await waitText(page, "#results li", "Published to room:random at offset");
  summary.results = await page.$$eval("#results li .msg", (els) => els.map((el) => el.textContent));
  await page.screenshot({ path: join(shots, "admin-actions.png") });

  // Signing out goes back to the form; the session is over.
  await page.click("#signout");
  await page.waitForSelector("#signin-view:not([hidden])", { timeout: TIMEOUT });
  summary.afterSignOut = await page.evaluate(async () => (await fetch("admin/session")).json());
  process.stdout.write(JSON.stringify(summary) + "\n");
  ok = true;
} catch (err) {
  process.stderr.write(`admin scenario failed: ${err && err.stack ? err.stack : err}\n`);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
