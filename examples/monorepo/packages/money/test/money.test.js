const test = require("node:test");
const assert = require("node:assert");
const money = require("..");

test("total multiplies and adds", () => {
  assert.equal(money.total([{ cents: 625, quantity: 2 }, { cents: 100, quantity: 1 }]), 1350);
});

test("tax rounds half to even", () => {
  assert.equal(money.withTax(250, 0.1), 275);
  assert.equal(money.withTax(5, 0.1), 6); // 5.5 -> 6
  assert.equal(money.withTax(15, 0.1), 16); // 16.5 -> 16
});

test("format", () => {
  assert.equal(money.format(1250), "12.50 EUR");
});
