// The seed's counting node in JavaScript (Node.js): for each message, its
// "count" numbers as "n".
//
// A child of a ShellNode (see graph.py). It reads one message a line from stdin
// and writes each number from 0 up to "count" as a line of JSON. When
// EMIT_SHELL_MODE is "persistent" (ShellNode sets it for the child) it ends each
// message's outputs with an empty line, as the persistent mode asks (Node.js
// writes to a pipe at once, so there is nothing to flush). By hand:
//
//     echo '{"count": 3}' | node examples/multilang/count.js
"use strict";

const readline = require("node:readline");

const persistent = process.env.EMIT_SHELL_MODE === "persistent";
const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });

input.on("line", (line) => {
  const message = JSON.parse(line);
  let out = "";
  for (let i = 0; i < message.count; i++) {
    out += JSON.stringify(i) + "\n";
  }
  if (persistent) {
    out += "\n";
  }
  process.stdout.write(out);
});
