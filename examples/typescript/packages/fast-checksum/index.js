"use strict";
const fs = require("fs");
const path = require("path");
const { adler32 } = require("checksum-core");

// A real addon (sharp, bcrypt, better-sqlite3) loads its compiled binary from its own
// folder at run time: `require("./prebuilds/linux-x64/fast-checksum.node")`. That is why
// esbuild cannot bundle it and dodo_lambda ships the package whole. This stand-in's
// binary is a placeholder, so it only checks that the file is there.
const binary = path.join(__dirname, "prebuilds", `${process.platform}-${process.arch}`, "fast-checksum.node");

exports.hasNativeBinding = () => fs.existsSync(binary);
exports.checksum = (text) => adler32(text);
