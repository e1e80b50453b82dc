// Drives examples/chat in headless Chromium: people on different transports
// talk in one room; saves a screenshot.
//   node chat.mjs <base-url> <screenshot.png>
// Prints one JSON summary on stdout; exits 1 on failure.
import { forwardConsole, launch } from "./browser.mjs";

const [base, screenshot] = process.argv.slice(2);
const TIMEOUT = 15000;

async function open(context, label, query = "") {
  const page = await context.newPage();
  forwardConsole(page, label);
  await page.goto(base + "/" + query);
  return page;
}

async function login(page, name, transport) {
  await page.fill("#name", name);
  await page.selectOption("#transport", transport);
  await page.click("#login button[type=submit]");
  await connected(page, transport);
}

async function connected(page, transport) {
  await page.waitForFunction(
    (t) => document.getElementById("status").textContent === `connected over ${t}`, transport, { timeout: TIMEOUT },
  );
}

async function send(page, text) {
  await page.fill("#text", text);
  await page.click("#composer button[type=submit]");
}

async function waitText(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#messages .text")].some((el) => el.textContent === t), text,
    { timeout: TIMEOUT },
  );
}

async function waitPresence(page, names) {
  await page.waitForFunction(
    (n) => JSON.stringify([...document.querySelectorAll("#presence li")].map((li) => li.textContent)) === JSON.stringify(n),
    names, { timeout: TIMEOUT },
  );
}

async function snapshot(page) {
  return page.evaluate(() => ({
    status: document.getElementById("status").textContent,
    room: document.getElementById("room-title").textContent,
    presence: [...document.querySelectorAll("#presence li")].map((li) => li.textContent),
    messages: [...document.querySelectorAll("#messages li[data-offset]")].map((li) => ({
      name: li.querySelector(".meta b").textContent,
      text: li.querySelector(".text").textContent,
      history: li.classList.contains("history"),
      mine: li.classList.contains("mine"),
    })),
  }));
}

const browser = await launch();
let ok = false;
try {
  const ctx = browser.context;
  // Carol leaves a message over HTTP streaming before the others arrive (history on join).
  const carol = await open(ctx, "carol", "?name=Carol&transport=http_stream");
  await connected(carol, "http_stream");
  await send(carol, "Welcome to the lobby!");
  await waitText(carol, "Welcome to the lobby!");
  await carol.close();

  // Alice on a WebSocket, Bob on Server-Sent Events, both through the login form.
  const alice = await open(ctx, "alice");
  await login(alice, "Alice", "websocket");
  const bob = await open(ctx, "bob");
  await login(bob, "Bob", "sse");
  for (const page of [alice, bob]) {
    await waitText(page, "Welcome to the lobby!");
    await waitPresence(page, ["Alice", "Bob"]);
  }
  await send(alice, "Hi Bob, I am on a WebSocket.");
  await waitText(bob, "Hi Bob, I am on a WebSocket.");
  await send(bob, "Hi Alice! Server-Sent Events here.");
  await waitText(alice, "Hi Alice! Server-Sent Events here.");

  // Bob steps into #random: Alice sees him leave; back in #lobby he gets the history.
  await bob.click("#rooms li[data-room=random]");
  await waitPresence(bob, ["Bob"]);
  await waitPresence(alice, ["Alice"]);
  await send(alice, "Bob left for #random.");
  await bob.click("#rooms li[data-room=lobby]");
  await waitPresence(alice, ["Alice", "Bob"]);
  await waitText(bob, "Bob left for #random.");
  await send(bob, "Back again.");
  await waitText(alice, "Back again.");

  await alice.screenshot({ path: screenshot });
  const summary = { alice: await snapshot(alice), bob: await snapshot(bob) };
  process.stdout.write(JSON.stringify(summary) + "\n");
  ok = true;
} catch (err) {
  process.stderr.write(`chat scenario failed: ${err && err.stack ? err.stack : err}\n`);
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
