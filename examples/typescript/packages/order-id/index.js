"use strict";
const crypto = require("crypto");

exports.newOrderId = (customer) =>
  "ord_" + crypto.createHash("sha256").update(String(customer)).digest("hex").slice(0, 12);
