// Headless Debian Chromium through playwright-core (no browser download: the
// executable comes from the system, CHROMIUM or /usr/bin/chromium).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A fresh browser profile; returns {context, close}. */
export async function launch() {
  const userDataDir = mkdtempSync(join(tmpdir(), "rtcore-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1100, height: 700 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Forward a page's console and errors to stderr, prefixed with a label. */
export function forwardConsole(page, label) {
  page.on("console", (msg) => process.stderr.write(`[${label}] ${msg.type()}: ${msg.text()}\n`));
  page.on("pageerror", (err) => process.stderr.write(`[${label}] page error: ${err}\n`));
}
