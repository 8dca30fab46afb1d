// `--data builtin:shapes[?stage=1|2|mix&split=train|heldout|all&seed=N&size=N]`: the built-in
// dataset as LLaVA records plus the loader that draws their pictures. Browser-safe.
import { KilnError } from '../runtime/errors.js';
import type { RgbImage } from './image.js';
import type { LlavaRecord } from './llava-json.js';
import { generateShapes, imageBlindBaseline, renderScene, type BlindBaseline, type ShapesSample } from './shapes.js';

export interface BuiltinData {
  name: string;
  records: LlavaRecord[];
  loadImage: (name: string) => Promise<RgbImage>;
  /** all samples of the generated set (both splits), for statistics. */
  all: ShapesSample[];
  /** the image-blind baseline of stage 2, scored on the held-out split. */
  baseline: BlindBaseline;
  /** 1: captions; 2: questions; mix: both conversations of every picture (captions first). */
  stage: 1 | 2 | 'mix';
  split: 'train' | 'heldout' | 'all';
}

const PICTURE = 64;

/** Whether `--data` names a built-in dataset. */
export function isBuiltin(data: string): boolean {
  return data.startsWith('builtin:');
}

/** @throws KilnError for an unknown name or option (the message lists what exists). */
export function openBuiltin(data: string): BuiltinData {
  const [name, query = ''] = data.slice('builtin:'.length).split('?', 2) as [string, string?];
  if (name !== 'shapes') throw new KilnError(`unknown built-in dataset '${name}' (there is builtin:shapes)`, { file: data });
  const params = new URLSearchParams(query);
  const known = new Set(['stage', 'split', 'seed', 'size']);
  for (const k of params.keys()) if (!known.has(k)) throw new KilnError(`unknown option '${k}' (options: stage=1|2|mix, split=train|heldout|all, seed=N, size=N)`, { file: data });
  const int = (k: string, dflt: number, min: number) => {
    const v = params.get(k);
    if (v === null) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new KilnError(`${k}=${v}: expected an integer >= ${min}`, { file: data });
    return n;
  };
  const stageText = params.get('stage') ?? '2';
  if (stageText !== '1' && stageText !== '2' && stageText !== 'mix') throw new KilnError(`stage=${stageText}: expected 1 (captions), 2 (questions) or mix (both)`, { file: data });
  const stage = stageText === 'mix' ? 'mix' : stageText === '1' ? 1 : 2;
  const split = params.get('split') ?? 'train';
  if (split !== 'train' && split !== 'heldout' && split !== 'all') throw new KilnError(`split=${split}: expected train, heldout or all`, { file: data });
  const all = generateShapes({ seed: int('seed', 0, 0), size: int('size', 1200, 1), imageSize: PICTURE });
  const byImage = new Map(all.map((s) => [`${s.id}.png`, s]));
  const chosen = all.filter((s) => split === 'all' || s.split === split);
  // mix: a picture's caption and its questions as two records, as LLaVA-1.5's instruction mix
  // carries caption-style conversations beside question answering. Captions ask for everything
  // the picture shows and nothing else, so they teach reading it; questions alone first teach
  // the per-question prior (the image-blind baseline), which a small model is slow to leave.
  const conversations = (s: ShapesSample): { id: string; turns: LlavaRecord['turns'] }[] =>
    stage === 'mix' ? [{ id: `${s.id}-caption`, turns: s.caption }, { id: `${s.id}-qa`, turns: s.qa }] : [{ id: s.id, turns: stage === 1 ? s.caption : s.qa }];
  const records: LlavaRecord[] = chosen.flatMap((s) => conversations(s).map((c) => ({ id: c.id, image: `${s.id}.png`, turns: c.turns }))).map((r, index) => ({ index, ...r }));
  return {
    name: data,
    records,
    loadImage: (img: string) => {
      const s = byImage.get(img);
      if (!s) return Promise.reject(new KilnError('no such picture in builtin:shapes', { file: img }));
      return Promise.resolve(renderScene(s.scene, PICTURE));
    },
    all,
    baseline: imageBlindBaseline(
      all.filter((s) => s.split === 'train'),
      all.filter((s) => s.split === 'heldout'),
    ),
    stage,
    split,
  };
}
