// Runs the transport scenarios of page/transports.js in headless Chromium.
//   node transports.mjs <base-url> '<json list of {transport, protocol}>'
// Prints one JSON result per scenario on stdout; exits 1 if any failed.
import { forwardConsole, launch } from "./browser.mjs";

const [base, spec] = process.argv.slice(2);
const scenarios = JSON.parse(spec);
const browser = await launch();
let failed = false;
try {
  for (const scenario of scenarios) {
    const page = await browser.context.newPage();
    const label = `${scenario.transport}/${scenario.protocol}`;
    forwardConsole(page, label);
    const path = scenario.protocol === "protobuf" ? "/protobuf" : "/";
    await page.goto(base + path);
    const result = await page.evaluate((s) => window.runScenario(s), scenario);
    process.stdout.write(JSON.stringify(result) + "\n");
    failed ||= !result.ok;
    await page.close();
  }
} catch (err) {
  process.stderr.write(`driver failed: ${err && err.stack ? err.stack : err}\n`);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
