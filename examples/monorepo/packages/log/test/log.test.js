const test = require("node:test");
const assert = require("node:assert");
const log = require("..");

test("one JSON line", () => {
  assert.deepEqual(JSON.parse(log.event("x", { n: 1 })), { event: "x", n: 1 });
});
