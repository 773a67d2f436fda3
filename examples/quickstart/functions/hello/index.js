const { greet } = require("greeting");

exports.handler = async (event) => ({
  statusCode: 200,
  body: JSON.stringify({ message: greet((event && event.name) || "world") }),
});
