// LLaVA's conversation JSON: `[{"id", "image"?, "conversations": [{"from": "human"|"gpt",
// "value"}, ...]}, ...]`, checked record by record. A malformed record is named (index and id) and
// set aside with its reason, never dropped silently; the rest of the file stays usable.
import { KilnError } from '../runtime/errors.js';
import type { Turn } from './template.js';
import { IMAGE_PLACEHOLDER } from './encode.js';

/** A record that passed the checks. `index` is its place in the file's array. */
export interface LlavaRecord {
  index: number;
  id: string;
  /** the image file name as the record gives it (relative to the image folder), or null. */
  image: string | null;
  turns: Turn[];
}

/** A record set aside, and why. */
export interface RecordIssue {
  index: number;
  id: string;
  reason: string;
}

export interface ParsedLlavaJson {
  records: LlavaRecord[];
  malformed: RecordIssue[];
}

function recordId(r: unknown, index: number): string {
  if (typeof r === 'object' && r !== null && !Array.isArray(r)) {
    const id = (r as Record<string, unknown>)['id'];
    if (typeof id === 'string' || typeof id === 'number') return String(id);
  }
  return `#${index}`;
}

/** Why a record cannot be used, or null when it can. */
function problem(r: unknown): string | null {
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return 'a record must be an object';
  const rec = r as Record<string, unknown>;
  if ('image' in rec && typeof rec['image'] !== 'string') return '"image" must be a file name (a string)';
  const conv = rec['conversations'];
  if (!Array.isArray(conv) || conv.length === 0) return '"conversations" must be a non-empty list';
  for (let k = 0; k < conv.length; k++) {
    const t = conv[k] as Record<string, unknown> | null;
    if (typeof t !== 'object' || t === null || Array.isArray(t)) return `turn ${k} must be an object with "from" and "value"`;
    if (t['from'] !== 'human' && t['from'] !== 'gpt') return `turn ${k}: "from" must be "human" or "gpt", not ${JSON.stringify(t['from'])}`;
    if (typeof t['value'] !== 'string') return `turn ${k}: "value" must be a string`;
    const expected = k % 2 === 0 ? 'human' : 'gpt';
    if (t['from'] !== expected) return `turn ${k} is from "${String(t['from'])}"; turns must alternate human, gpt, human, ...`;
  }
  const turns = conv as Turn[];
  const count = turns.reduce((n, t) => n + t.value.split(IMAGE_PLACEHOLDER).length - 1, 0);
  const hasImage = typeof rec['image'] === 'string';
  if (hasImage && count === 0) return `has an image but no ${IMAGE_PLACEHOLDER} placeholder in its first turn`;
  if (hasImage && count > 1) return `has ${count} ${IMAGE_PLACEHOLDER} placeholders; LLaVA-1.5 takes one image per record`;
  if (hasImage && !turns[0]!.value.includes(IMAGE_PLACEHOLDER)) return `its ${IMAGE_PLACEHOLDER} placeholder is not in the first turn`;
  if (!hasImage && count > 0) return `has ${IMAGE_PLACEHOLDER} in its text but no "image"`;
  if (!turns.some((t) => t.from === 'gpt')) return 'has no answer (no turn from "gpt")';
  return null;
}

/**
 * Checks a parsed LLaVA conversation file. `file` names it in errors.
 * @throws KilnError when the top level is not a list.
 */
export function parseLlavaJson(value: unknown, file: string): ParsedLlavaJson {
  if (!Array.isArray(value)) throw new KilnError('expected a JSON list of LLaVA conversation records', { file });
  const records: LlavaRecord[] = [];
  const malformed: RecordIssue[] = [];
  value.forEach((r, index) => {
    const id = recordId(r, index);
    const why = problem(r);
    if (why !== null) {
      malformed.push({ index, id, reason: why });
      return;
    }
    const rec = r as { image?: string; conversations: Turn[] };
    records.push({ index, id, image: rec.image ?? null, turns: rec.conversations.map((t) => ({ from: t.from, value: t.value })) });
  });
  return { records, malformed };
}

/**
 * JSON.parse with the error naming the file and the line/column when the engine reports a position.
 * @throws KilnError for text that is not JSON.
 */
export function parseJsonText(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const msg = (e as Error).message;
    const m = /position (\d+)/.exec(msg);
    let where = '';
    if (m) {
      const pos = Number(m[1]);
      const before = text.slice(0, pos);
      const line = before.split('\n').length;
      where = ` (line ${line}, column ${pos - before.lastIndexOf('\n')})`;
    }
    throw new KilnError(`not valid JSON${where}: ${msg}`, { file, cause: e });
  }
}
