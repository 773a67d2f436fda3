const log = require("@acme/log");
const money = require("@acme/money");

exports.handler = async (order) => {
  const cents = money.withTax(money.total(order.items), 0.2);
  log.event("order_priced", { customer: order.customer, cents });
  return { customer: order.customer, total: money.format(cents) };
};
