"use strict";

exports.adler32 = (text) => {
  let a = 1;
  let b = 0;
  for (const byte of Buffer.from(String(text))) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
};
