// loss.png: the loss terms over optimiser steps, train and held-out, one panel per term, and
// held-out answer accuracy beside the image-blind baseline. Drawn with @napi-rs/canvas (Skia,
// prebuilt, no install script): lines, markers and text with the system's fonts. A pure
// function of the logged history: the same history gives the same bytes.
import { createCanvas, GlobalFonts, type SKRSContext2D } from '@napi-rs/canvas';

/** One logged optimiser step: each loss term's value before the step's update. */
export interface TrainPoint {
  readonly step: number;
  readonly terms: Readonly<Record<string, number>>;
}

/** One held-out evaluation after `step` optimiser steps. */
export interface HeldoutPoint {
  readonly step: number;
  readonly terms: Readonly<Record<string, number>>;
  /** answer accuracy in [0, 1]; absent when the data has no answers to score. */
  readonly accuracy?: number;
}

export interface LossHistory {
  readonly train: readonly TrainPoint[];
  readonly heldout: readonly HeldoutPoint[];
  /** the image-blind baseline's accuracy in [0, 1] (builtin:shapes), drawn as a dashed line. */
  readonly baselineAccuracy?: number;
  /** a line under the panels (model, data, seed). */
  readonly caption?: string;
}

/** A panel's plot area in pixels: what tests look inside for the curves. */
export interface PlotArea {
  readonly title: string;
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

export const PLOT_COLOURS = { train: '#1f77b4', trainRaw: 'rgba(31,119,180,0.28)', heldout: '#e8710a', baseline: '#555555' } as const;

const PANEL_W = 420;
const PANEL_H = 340;
const MARGIN = { left: 70, right: 16, top: 34, bottom: 48 };
const CAPTION_H = 26;

/** The panels loss.png has for `history`, in order, with their plot areas. */
export function plotLayout(history: LossHistory): { width: number; height: number; panels: PlotArea[] } {
  const names = termNames(history);
  const titles = [...names.map((n) => `${n} loss`), ...(history.heldout.some((h) => h.accuracy !== undefined) ? ['held-out answer accuracy'] : [])];
  const panels = titles.map((title, i) => ({
    title,
    x: i * PANEL_W + MARGIN.left,
    y: MARGIN.top,
    width: PANEL_W - MARGIN.left - MARGIN.right,
    height: PANEL_H - MARGIN.top - MARGIN.bottom,
  }));
  return { width: Math.max(1, titles.length) * PANEL_W, height: PANEL_H + (history.caption ? CAPTION_H : 0), panels };
}

function termNames(h: LossHistory): string[] {
  const names: string[] = [];
  for (const p of [...h.train, ...h.heldout]) for (const k of Object.keys(p.terms)) if (!names.includes(k)) names.push(k);
  return names;
}

/** Steps of the running mean drawn over the raw train curve: about a fiftieth of the run. */
export function smoothingWindow(points: number): number {
  return Math.max(1, Math.round(points / 50));
}

/**
 * loss.png's bytes. Loss panels use a log scale when their values span more than a factor of 20
 * (loss terms fall by orders of magnitude), linear otherwise.
 * @throws RangeError for an empty history or a non-finite value (a plot never hides a NaN:
 *   training stops on one before it is logged).
 */
export function drawLossPlot(history: LossHistory): Buffer {
  if (history.train.length === 0 && history.heldout.length === 0) throw new RangeError('drawLossPlot: the history is empty');
  for (const p of [...history.train, ...history.heldout]) {
    for (const [k, v] of Object.entries(p.terms)) if (!Number.isFinite(v)) throw new RangeError(`drawLossPlot: ${k} at step ${p.step} is ${v}`);
    if (!Number.isFinite(p.step)) throw new RangeError(`drawLossPlot: step ${p.step}`);
  }
  const layout = plotLayout(history);
  const canvas = createCanvas(layout.width, layout.height);
  const g = canvas.getContext('2d');
  g.fillStyle = '#ffffff';
  g.fillRect(0, 0, layout.width, layout.height);
  const steps = [...history.train, ...history.heldout].map((p) => p.step);
  const xRange: [number, number] = [Math.min(0, ...steps), Math.max(1, ...steps)];
  const names = termNames(history);
  names.forEach((name, i) => {
    const train = history.train.filter((p) => name in p.terms).map((p) => [p.step, p.terms[name]!] as const);
    const held = history.heldout.filter((p) => name in p.terms).map((p) => [p.step, p.terms[name]!] as const);
    const values = [...train, ...held].map((p) => p[1]);
    const area = layout.panels[i]!;
    const y = yAxis(values);
    frame(g, area, xRange, y, 'loss');
    const window = smoothingWindow(train.length);
    line(g, area, xRange, y, train, PLOT_COLOURS.trainRaw, 1);
    line(g, area, xRange, y, runningMean(train, window), PLOT_COLOURS.train, 2);
    line(g, area, xRange, y, held, PLOT_COLOURS.heldout, 2, true);
    legend(g, area, [
      ...(train.length > 0 ? [{ label: window > 1 ? `train (mean of ${window} steps)` : 'train', colour: PLOT_COLOURS.train }] : []),
      ...(held.length > 0 ? [{ label: 'held-out', colour: PLOT_COLOURS.heldout }] : []),
    ]);
  });
  const acc = history.heldout.filter((h) => h.accuracy !== undefined).map((h) => [h.step, 100 * h.accuracy!] as const);
  if (acc.length > 0) {
    const area = layout.panels[names.length]!;
    const y: YAxis = { log: false, min: 0, max: 100, ticks: [0, 20, 40, 60, 80, 100] };
    frame(g, area, xRange, y, 'accuracy (%)');
    const entries: { label: string; colour: string }[] = [{ label: 'held-out', colour: PLOT_COLOURS.heldout }];
    if (history.baselineAccuracy !== undefined) {
      const b = 100 * history.baselineAccuracy;
      g.setLineDash([6, 4]);
      line(g, area, xRange, y, [[xRange[0], b], [xRange[1], b]], PLOT_COLOURS.baseline, 1.5);
      g.setLineDash([]);
      entries.push({ label: `image-blind baseline ${b.toFixed(1)}%`, colour: PLOT_COLOURS.baseline });
    }
    line(g, area, xRange, y, acc, PLOT_COLOURS.heldout, 2, true);
    // Accuracy rises: its legend goes low, where the curve has left the panel empty.
    legend(g, area, entries, 'bottom');
  }
  if (history.caption) {
    g.fillStyle = '#333333';
    g.font = `12px ${FONT}`;
    g.textAlign = 'left';
    g.textBaseline = 'middle';
    g.fillText(history.caption, 12, PANEL_H + CAPTION_H / 2 - 4);
  }
  return canvas.toBuffer('image/png');
}

/** Whether the canvas can draw text here (Skia found a font); without one, the labels are missing. */
export function plotFontsAvailable(): boolean {
  return GlobalFonts.families.length > 0;
}

const FONT = 'DejaVu Sans, Liberation Sans, Arial, sans-serif';

interface YAxis {
  log: boolean;
  min: number;
  max: number;
  ticks: number[];
}

function yAxis(values: readonly number[]): YAxis {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (values.length === 0) [lo, hi] = [0, 1];
  if (lo > 0 && hi / lo > 20) {
    const a = Math.floor(Math.log10(lo));
    const b = Math.ceil(Math.log10(hi));
    const ticks: number[] = [];
    for (let e = a; e <= b; e++) for (const m of b - a <= 3 ? [1, 2, 5] : [1]) ticks.push(m * 10 ** e);
    return { log: true, min: Math.log10(lo) - 0.05 * (Math.log10(hi) - Math.log10(lo)), max: Math.log10(hi) + 0.05 * (Math.log10(hi) - Math.log10(lo)), ticks: ticks.filter((t) => t >= lo * 0.8 && t <= hi * 1.25) };
  }
  if (hi === lo) [lo, hi] = [lo - Math.max(1e-6, Math.abs(lo) * 0.1), hi + Math.max(1e-6, Math.abs(hi) * 0.1)];
  const min = Math.min(0, lo) === 0 && lo >= 0 ? 0 : lo;
  const ticks = niceTicks(min, hi);
  return { log: false, min: ticks[0]!, max: ticks[ticks.length - 1]!, ticks };
}

function niceTicks(lo: number, hi: number): number[] {
  const raw = (hi - lo) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let t = Math.floor(lo / step) * step; t <= hi + step * 0.999; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

const px = (area: PlotArea, xr: readonly [number, number], x: number) => area.x + ((x - xr[0]) / (xr[1] - xr[0])) * area.width;
const py = (area: PlotArea, y: YAxis, v: number) => {
  const t = y.log ? Math.log10(v) : v;
  return area.y + area.height - ((t - y.min) / (y.max - y.min)) * area.height;
};

function tickText(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0).replace('e+', 'e');
  return String(Number(v.toPrecision(3)));
}

function frame(g: SKRSContext2D, area: PlotArea, xr: readonly [number, number], y: YAxis, yLabel: string): void {
  g.strokeStyle = '#e3e3e3';
  g.lineWidth = 1;
  g.fillStyle = '#222222';
  g.font = `11px ${FONT}`;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (const t of y.ticks) {
    const yy = Math.round(py(area, y, t)) + 0.5;
    g.beginPath();
    g.moveTo(area.x, yy);
    g.lineTo(area.x + area.width, yy);
    g.stroke();
    g.fillText(tickText(t), area.x - 6, yy);
  }
  g.textAlign = 'center';
  g.textBaseline = 'top';
  for (const t of niceTicks(xr[0], xr[1]).filter((t) => t >= xr[0] && t <= xr[1])) {
    const xx = Math.round(px(area, xr, t)) + 0.5;
    g.beginPath();
    g.moveTo(xx, area.y);
    g.lineTo(xx, area.y + area.height);
    g.stroke();
    g.fillText(tickText(t), xx, area.y + area.height + 6);
  }
  g.strokeStyle = '#444444';
  g.strokeRect(area.x + 0.5, area.y + 0.5, area.width, area.height);
  g.font = `12px ${FONT}`;
  g.fillText('optimiser step', area.x + area.width / 2, area.y + area.height + 24);
  g.font = `bold 13px ${FONT}`;
  g.textBaseline = 'bottom';
  g.fillText(y.log ? `${area.title} (log scale)` : area.title, area.x + area.width / 2, area.y - 10);
  g.save();
  g.translate(area.x - 52, area.y + area.height / 2);
  g.rotate(-Math.PI / 2);
  g.font = `12px ${FONT}`;
  g.textBaseline = 'middle';
  g.fillText(yLabel, 0, 0);
  g.restore();
}

function line(g: SKRSContext2D, area: PlotArea, xr: readonly [number, number], y: YAxis, pts: readonly (readonly [number, number])[], colour: string, width: number, markers = false): void {
  if (pts.length === 0) return;
  g.save();
  g.beginPath();
  g.rect(area.x, area.y, area.width, area.height);
  g.clip();
  g.strokeStyle = colour;
  g.fillStyle = colour;
  g.lineWidth = width;
  g.lineJoin = 'round';
  g.beginPath();
  pts.forEach(([s, v], i) => (i === 0 ? g.moveTo(px(area, xr, s), py(area, y, v)) : g.lineTo(px(area, xr, s), py(area, y, v))));
  g.stroke();
  if (markers)
    for (const [s, v] of pts) {
      g.beginPath();
      g.arc(px(area, xr, s), py(area, y, v), 3.5, 0, 2 * Math.PI);
      g.fill();
    }
  g.restore();
}

function legend(g: SKRSContext2D, area: PlotArea, entries: readonly { label: string; colour: string }[], where: 'top' | 'bottom' = 'top'): void {
  g.font = `11px ${FONT}`;
  g.textAlign = 'left';
  g.textBaseline = 'middle';
  const w = Math.max(0, ...entries.map((e) => g.measureText(e.label).width)) + 34;
  const x = area.x + area.width - w - 6;
  const h = entries.length * 16 + 6;
  let yy = where === 'top' ? area.y + 8 : area.y + area.height - h - 8;
  g.fillStyle = 'rgba(255,255,255,0.85)';
  g.fillRect(x, yy, w, h);
  for (const e of entries) {
    yy += 11;
    g.strokeStyle = e.colour;
    g.lineWidth = 2;
    g.beginPath();
    g.moveTo(x + 6, yy);
    g.lineTo(x + 24, yy);
    g.stroke();
    g.fillStyle = '#222222';
    g.fillText(e.label, x + 29, yy);
    yy += 5;
  }
}

/** The running mean over the last `window` points (fewer at the start). */
function runningMean(pts: readonly (readonly [number, number])[], window: number): [number, number][] {
  let sum = 0;
  return pts.map(([s, v], i) => {
    sum += v;
    if (i >= window) sum -= pts[i - window]![1];
    return [s, sum / Math.min(i + 1, window)];
  });
}
