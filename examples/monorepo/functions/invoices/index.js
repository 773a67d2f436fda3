const log = require("@acme/log");
// From the layer (layers/common): Lambda puts /opt/nodejs/node_modules on NODE_PATH.
const money = require("@acme/money");

exports.handler = async (invoice) => {
  const lines = invoice.lines.map((l) => `${l.text}: ${money.format(l.cents * l.quantity)}`);
  log.event("invoice_rendered", { number: invoice.number, lines: lines.length });
  return { number: invoice.number, lines, total: money.format(money.total(
    invoice.lines.map((l) => ({ cents: l.cents, quantity: l.quantity })))) };
};
