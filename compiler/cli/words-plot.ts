// words.png: the image the model saw with each patch labelled by the top-1 token of its visual
// word and that token's probability (VW-LMM's qualitative figure). Drawn with @napi-rs/canvas, as
// loss.png is. The image is scaled up by a whole factor with nearest-neighbour sampling (each
// pixel of the model's input becomes a scale x scale square, nothing is invented between them),
// chosen so that a patch is at least MIN_CELL_PX wide: the tiny config's 7-pixel patches of a
// 28-pixel image are drawn 84 pixels wide (x12), LLaVA-1.5's 14-pixel patches 84 wide (x6).
import { createCanvas, type SKRSContext2D } from '@napi-rs/canvas';

/** The narrowest a patch is drawn: room for a word of about ten characters at 11-13 px. */
export const MIN_CELL_PX = 80;
const CAPTION_H = 24;
const FONT = 'DejaVu Sans, Liberation Sans, Arial, sans-serif';

/** An RGB image, 8 bits per channel, row-major [height, width, 3]. */
export interface Rgb8 {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

export interface PatchLabel {
  /** what is written on the patch (the token's text, or its id without a tokenizer). */
  readonly text: string;
  /** its probability in [0, 1]. */
  readonly p: number;
}

/** The whole-number factor the image is drawn at: each patch at least MIN_CELL_PX wide. */
export function wordsScale(imageWidth: number, cols: number): number {
  return Math.max(1, Math.ceil(MIN_CELL_PX / (imageWidth / cols)));
}

/**
 * An image as the model saw it, from pixel_values [channels = 3, size, size] f32 normalised with
 * `mean` and `std` (x = (v / 255 - mean) / std): v = (x * std + mean) * 255, rounded, clamped.
 */
export function denormalise(pixels: ArrayLike<number>, size: number, mean: readonly number[], std: readonly number[]): Rgb8 {
  const n = size * size;
  if (pixels.length !== 3 * n) throw new RangeError(`denormalise: expected 3 x ${size} x ${size} values, got ${pixels.length}`);
  const data = new Uint8Array(3 * n);
  for (let c = 0; c < 3; c++)
    for (let i = 0; i < n; i++) data[3 * i + c] = Math.min(255, Math.max(0, Math.round((pixels[c * n + i]! * std[c]! + mean[c]!) * 255)));
  return { width: size, height: size, data };
}

/** Where the patches are in words.png: the scaled image starts at (0, 0). */
export function wordsLayout(image: Rgb8, grid: readonly [number, number], caption: boolean): { scale: number; width: number; height: number; cellW: number; cellH: number } {
  const scale = wordsScale(image.width, grid[1]);
  const width = image.width * scale;
  return { scale, width, height: image.height * scale + (caption ? CAPTION_H : 0), cellW: width / grid[1], cellH: (image.height * scale) / grid[0] };
}

/**
 * words.png's bytes: the image scaled up (see wordsScale), a thin grid on the patch borders, and
 * on each patch its label (white on a dark box, centred; the font shrinks to fit, 8 px at least,
 * and a word still too long ends in an ellipsis) with the probability under it (probabilityText).
 * @throws RangeError when the labels are not one per patch.
 */
export function drawWordsPicture(image: Rgb8, grid: readonly [number, number], labels: readonly PatchLabel[], caption?: string): Buffer {
  const [rows, cols] = grid;
  if (labels.length !== rows * cols) throw new RangeError(`drawWordsPicture: ${labels.length} labels for a ${rows} x ${cols} grid`);
  const L = wordsLayout(image, grid, caption !== undefined);
  const canvas = createCanvas(L.width, L.height);
  const g = canvas.getContext('2d');
  g.fillStyle = '#ffffff';
  g.fillRect(0, 0, L.width, L.height);
  // Nearest-neighbour scaling, pixel by pixel: exact, and independent of the canvas's filters.
  const imgData = g.createImageData(L.width, image.height * L.scale);
  const out = imgData.data;
  for (let y = 0; y < image.height * L.scale; y++) {
    const sy = Math.floor(y / L.scale);
    for (let x = 0; x < L.width; x++) {
      const s = 3 * (sy * image.width + Math.floor(x / L.scale));
      const d = 4 * (y * L.width + x);
      out[d] = image.data[s]!;
      out[d + 1] = image.data[s + 1]!;
      out[d + 2] = image.data[s + 2]!;
      out[d + 3] = 255;
    }
  }
  g.putImageData(imgData, 0, 0);
  g.strokeStyle = 'rgba(255,255,255,0.45)';
  g.lineWidth = 1;
  for (let c = 1; c < cols; c++) {
    const x = Math.round(c * L.cellW) + 0.5;
    g.beginPath();
    g.moveTo(x, 0);
    g.lineTo(x, rows * L.cellH);
    g.stroke();
  }
  for (let r = 1; r < rows; r++) {
    const y = Math.round(r * L.cellH) + 0.5;
    g.beginPath();
    g.moveTo(0, y);
    g.lineTo(L.width, y);
    g.stroke();
  }
  labels.forEach((label, i) => drawLabel(g, label, (i % cols) * L.cellW, Math.floor(i / cols) * L.cellH, L.cellW, L.cellH));
  if (caption !== undefined) {
    g.fillStyle = '#222222';
    g.font = `12px ${FONT}`;
    g.textAlign = 'left';
    g.textBaseline = 'middle';
    g.fillText(fit(g, caption, L.width - 12, 12, 9, ''), 6, rows * L.cellH + CAPTION_H / 2);
  }
  return canvas.toBuffer('image/png');
}

/** `text` in the largest font from `size` down to `min` px that fits `width`, else cut with an ellipsis. */
function fit(g: SKRSContext2D, text: string, width: number, size: number, min: number, weight: string): string {
  for (let s = size; s >= min; s--) {
    g.font = `${weight}${s}px ${FONT}`;
    if (g.measureText(text).width <= width) return text;
  }
  let t = text;
  while (t.length > 1 && g.measureText(`${t}…`).width > width) t = t.slice(0, -1);
  return `${t}…`;
}

/** A probability in at most 6 characters that keeps 2 significant digits below 0.01 (0.0013): near-uniform visual words stay readable. */
export function probabilityText(p: number): string {
  if (p >= 0.01 || p === 0) return p.toFixed(2);
  if (p >= 1e-4) return p.toPrecision(2);
  return p.toExponential(0);
}

function drawLabel(g: SKRSContext2D, label: PatchLabel, x: number, y: number, w: number, h: number): void {
  const pad = 3;
  const size = Math.max(8, Math.min(14, Math.floor(h / 4)));
  const word = fit(g, label.text, w - 2 * pad - 4, size, 8, 'bold ');
  const wordFont = g.font;
  const wordW = g.measureText(word).width;
  const pText = probabilityText(label.p);
  const pSize = Math.max(7, size - 3);
  g.font = `${pSize}px ${FONT}`;
  const pW = g.measureText(pText).width;
  const boxW = Math.min(w - 2, Math.max(wordW, pW) + 2 * pad + 2);
  const boxH = size + pSize + 3 * pad;
  const bx = x + (w - boxW) / 2;
  const by = y + (h - boxH) / 2;
  g.fillStyle = 'rgba(0,0,0,0.6)';
  g.fillRect(bx, by, boxW, boxH);
  g.fillStyle = '#ffffff';
  g.textAlign = 'center';
  g.textBaseline = 'top';
  g.font = wordFont;
  g.fillText(word, x + w / 2, by + pad);
  g.fillStyle = '#d8d8d8';
  g.font = `${pSize}px ${FONT}`;
  g.fillText(pText, x + w / 2, by + 2 * pad + size);
}
