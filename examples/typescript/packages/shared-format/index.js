"use strict";

exports.formatMoney = (cents) => `${(cents / 100).toFixed(2)} EUR`;
