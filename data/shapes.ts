// `builtin:shapes`: a dataset generated from a seed, never downloaded. Each sample is a small RGB
// picture of identical coloured shapes (kind, colour, size, count, and for a single shape its
// position) drawn by the rasteriser below, a caption (stage 1), and a multi-turn question/answer
// conversation (stage 2) whose answers can only be read off the picture. The images go through
// the same LLaVA preprocessing as image files do.
import type { RgbImage } from './image.js';
import type { Turn } from './template.js';
import { Rng, deriveSeed } from './random.js';

export const SHAPE_KINDS = ['circle', 'square', 'triangle'] as const;
export const SHAPE_COLOURS = { red: [220, 40, 40], green: [40, 170, 60], blue: [40, 80, 220], yellow: [235, 200, 30] } as const;
export const SHAPE_SIZES = ['small', 'large'] as const;
export const SHAPE_POSITIONS = ['left', 'right', 'top', 'bottom', 'centre'] as const;
const COUNT_WORDS = ['one', 'two', 'three'] as const;

export type ShapeKind = (typeof SHAPE_KINDS)[number];
export type ShapeColour = keyof typeof SHAPE_COLOURS;
export type QuestionType = 'shape' | 'colour' | 'count' | 'size' | 'position';
export const QUESTION_TYPES: readonly QuestionType[] = ['shape', 'colour', 'count', 'size', 'position'];

/** What a picture shows; `position` only when there is one shape. Pixel geometry in `shapes`. */
export interface ShapeScene {
  kind: ShapeKind;
  colour: ShapeColour;
  size: (typeof SHAPE_SIZES)[number];
  count: 1 | 2 | 3;
  position: (typeof SHAPE_POSITIONS)[number] | null;
  /** centre and radius of each shape, in pixels of the `imageSize` square. */
  shapes: { cx: number; cy: number; r: number }[];
}

export interface ShapesQuestion {
  type: QuestionType;
  question: string;
  answer: string;
}

export interface ShapesSample {
  id: string;
  split: 'train' | 'heldout';
  scene: ShapeScene;
  /** stage 1: "<image>\ndescribe the image ." -> the caption. */
  caption: Turn[];
  /** stage 2: two or three questions about the picture, the first turn holding the placeholder. */
  qa: Turn[];
  questions: ShapesQuestion[];
}

export interface ShapesOptions {
  /** default 0. */
  seed?: number;
  /** pictures in all (train + held-out); default 1200. */
  size?: number;
  /** every k-th picture is held out; default 6 (1000 train, 200 held-out at the default size). */
  heldOutEvery?: number;
  /** side of the square pictures in pixels; default 64. */
  imageSize?: number;
}

const QUESTIONS: Record<QuestionType, string> = {
  shape: 'what shape are the objects ?',
  colour: 'what colour are the objects ?',
  count: 'how many objects are there ?',
  size: 'are the objects small or large ?',
  position: 'where is the object ?',
};

const POSITION_PHRASE: Record<(typeof SHAPE_POSITIONS)[number], string> = {
  left: 'on the left',
  right: 'on the right',
  top: 'at the top',
  bottom: 'at the bottom',
  centre: 'in the centre',
};

function answerOf(scene: ShapeScene, type: QuestionType): string {
  switch (type) {
    case 'shape':
      return scene.kind;
    case 'colour':
      return scene.colour;
    case 'count':
      return COUNT_WORDS[scene.count - 1]!;
    case 'size':
      return scene.size;
    case 'position':
      return scene.position!;
  }
}

function captionOf(scene: ShapeScene): string {
  const noun = scene.count === 1 ? scene.kind : `${scene.kind}s`;
  const where = scene.position ? ` ${POSITION_PHRASE[scene.position]}` : '';
  return `${COUNT_WORDS[scene.count - 1]} ${scene.size} ${scene.colour} ${noun}${where} .`;
}

function makeScene(rng: Rng, imageSize: number): ShapeScene {
  const kind = rng.pick(SHAPE_KINDS);
  const colour = rng.pick(Object.keys(SHAPE_COLOURS) as ShapeColour[]);
  const size = rng.pick(SHAPE_SIZES);
  const count = (1 + rng.int(3)) as 1 | 2 | 3;
  const cell = imageSize / 4;
  const r = size === 'small' ? imageSize * 0.09 : imageSize * 0.16;
  const jitter = () => (rng.int(5) - 2) * (imageSize / 64);
  if (count === 1) {
    const position = rng.pick(SHAPE_POSITIONS);
    const at = { left: [1, 2], right: [3, 2], top: [2, 1], bottom: [2, 3], centre: [2, 2] }[position];
    return { kind, colour, size, count, position, shapes: [{ cx: at[0]! * cell + jitter(), cy: at[1]! * cell + jitter(), r }] };
  }
  // Several shapes: distinct cells of a 3x3 grid, so they never overlap.
  const cells = rng.shuffle([0, 1, 2, 3, 4, 5, 6, 7, 8]).slice(0, count);
  const step = imageSize / 3;
  const shapes = cells.map((c) => ({ cx: (c % 3) * step + step / 2 + jitter(), cy: Math.floor(c / 3) * step + step / 2 + jitter(), r: Math.min(r, step * 0.45) }));
  return { kind, colour, size, count, position: null, shapes };
}

/** Whether the pixel centre (px, py) is inside a shape of `kind` at (cx, cy) with radius r. */
function inside(kind: ShapeKind, px: number, py: number, cx: number, cy: number, r: number): boolean {
  const dx = px - cx;
  const dy = py - cy;
  if (kind === 'circle') return dx * dx + dy * dy <= r * r;
  if (kind === 'square') return Math.abs(dx) <= r * 0.85 && Math.abs(dy) <= r * 0.85;
  // Upward triangle: apex (0, -r), base at y = 0.8 r from x = -0.95 r to 0.95 r.
  if (dy < -r || dy > 0.8 * r) return false;
  const half = (0.95 * (dy + r)) / 1.8;
  return Math.abs(dx) <= half;
}

/** Draws a scene: shapes in their colour on a light grey background; hard edges, exact per pixel. */
export function renderScene(scene: ShapeScene, imageSize: number): RgbImage {
  const data = new Uint8Array(imageSize * imageSize * 3).fill(235);
  const rgb = SHAPE_COLOURS[scene.colour];
  for (let y = 0; y < imageSize; y++) {
    for (let x = 0; x < imageSize; x++) {
      if (!scene.shapes.some((s) => inside(scene.kind, x + 0.5, y + 0.5, s.cx, s.cy, s.r))) continue;
      const o = (y * imageSize + x) * 3;
      data[o] = rgb[0];
      data[o + 1] = rgb[1];
      data[o + 2] = rgb[2];
    }
  }
  return { width: imageSize, height: imageSize, data };
}

/** The whole dataset, deterministic from `seed` (sample i depends only on seed and i). */
export function generateShapes(opts: ShapesOptions = {}): ShapesSample[] {
  const seed = opts.seed ?? 0;
  const n = opts.size ?? 1200;
  const every = opts.heldOutEvery ?? 6;
  const imageSize = opts.imageSize ?? 64;
  const out: ShapesSample[] = [];
  for (let i = 0; i < n; i++) {
    const rng = new Rng(deriveSeed(seed, i));
    const scene = makeScene(rng, imageSize);
    const types = QUESTION_TYPES.filter((t) => t !== 'position' || scene.position !== null);
    // A position question tells the count (only single shapes have one), so a conversation asks
    // at most one of the two: whichever the shuffle puts first.
    const order = rng.shuffle([...types]);
    const first = order.find((t) => t === 'position' || t === 'count');
    const picked = order.filter((t) => (t !== 'position' && t !== 'count') || t === first).slice(0, 2 + rng.int(2));
    const questions = picked.map((type) => ({ type, question: QUESTIONS[type], answer: answerOf(scene, type) }));
    const qa: Turn[] = [];
    questions.forEach((q, k) => {
      qa.push({ from: 'human', value: k === 0 ? `<image>\n${q.question}` : q.question });
      qa.push({ from: 'gpt', value: q.answer });
    });
    out.push({
      id: `shapes-${seed}-${i}`,
      split: i % every === every - 1 ? 'heldout' : 'train',
      scene,
      caption: [
        { from: 'human', value: '<image>\ndescribe the image .' },
        { from: 'gpt', value: captionOf(scene) },
      ],
      qa,
      questions,
    });
  }
  return out;
}

export interface BlindBaseline {
  /** per question type: the most frequent train answer and its accuracy on the evaluated split. */
  perType: Record<string, { answer: string; correct: number; total: number; accuracy: number }>;
  correct: number;
  total: number;
  accuracy: number;
}

/**
 * The best answer that ignores the image: for each question type the most frequent answer among
 * the train questions (ties: alphabetical first), scored on `evaluated`'s questions. Any accuracy
 * a model reaches on builtin:shapes is to be read beside this one.
 */
export function imageBlindBaseline(train: readonly ShapesSample[], evaluated: readonly ShapesSample[]): BlindBaseline {
  const freq = new Map<QuestionType, Map<string, number>>();
  for (const s of train) {
    for (const q of s.questions) {
      const m = freq.get(q.type) ?? new Map<string, number>();
      m.set(q.answer, (m.get(q.answer) ?? 0) + 1);
      freq.set(q.type, m);
    }
  }
  const best = new Map<QuestionType, string>();
  for (const [t, m] of freq) {
    const [answer] = [...m].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]!;
    best.set(t, answer);
  }
  const perType: BlindBaseline['perType'] = {};
  let correct = 0;
  let total = 0;
  for (const s of evaluated) {
    for (const q of s.questions) {
      const guess = best.get(q.type) ?? '';
      const e = (perType[q.type] ??= { answer: guess, correct: 0, total: 0, accuracy: 0 });
      e.total++;
      total++;
      if (guess === q.answer) {
        e.correct++;
        correct++;
      }
    }
  }
  for (const e of Object.values(perType)) e.accuracy = e.total > 0 ? e.correct / e.total : 0;
  return { perType, correct, total, accuracy: total > 0 ? correct / total : 0 };
}
