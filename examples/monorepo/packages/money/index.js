// Money in integer cents, shared by the functions and the layer.
const roundHalfEven = require("round-half-even");

exports.total = (items) => items.reduce((sum, item) => sum + item.cents * item.quantity, 0);

exports.withTax = (cents, rate) => roundHalfEven(cents * (1 + rate));

exports.format = (cents, currency = "EUR") => `${(cents / 100).toFixed(2)} ${currency}`;
