// loss.png decoded and looked at: its size is the layout's, each panel's plot area holds the
// curves in their colours (and not a colour whose series is absent), a falling loss is drawn
// falling, the axes carry text, and the same history gives the same bytes.
import { describe, expect, it } from 'vitest';
import { decode } from 'fast-png';
import { drawLossPlot, plotFontsAvailable, plotLayout, PLOT_COLOURS, type LossHistory, type PlotArea } from '../../../compiler/cli/loss-plot.js';

function history(steps = 300): LossHistory {
  const train = Array.from({ length: steps }, (_, i) => ({ step: i + 1, terms: { lm: 0.4 + 6 * Math.exp(-i / 40) + 0.05 * Math.sin(i), vm: 1e-4 + 0.012 * Math.exp(-i / 80) } }));
  const heldout = [0, 100, 200, 300].map((s) => ({ step: s, terms: { lm: 0.5 + 6 * Math.exp(-s / 40), vm: 1.2e-4 + 0.012 * Math.exp(-s / 80) }, accuracy: 0.2 + s / 500 }));
  return { train, heldout, baselineAccuracy: 0.371, caption: 'test history' };
}

const hex = (c: string): [number, number, number] => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)) as [number, number, number];

/** Pixels of `area` within 40 (sum of channel distances) of `colour`, with their coordinates. */
function pixelsOf(png: ReturnType<typeof decode>, area: PlotArea, colour: string): { x: number; y: number }[] {
  const [r, g, b] = hex(colour);
  const ch = png.channels;
  const out: { x: number; y: number }[] = [];
  for (let y = Math.ceil(area.y) + 2; y < area.y + area.height - 1; y++)
    for (let x = Math.ceil(area.x) + 2; x < area.x + area.width - 1; x++) {
      const o = (y * png.width + x) * ch;
      if (Math.abs(png.data[o]! - r) + Math.abs(png.data[o + 1]! - g) + Math.abs(png.data[o + 2]! - b) < 40) out.push({ x, y });
    }
  return out;
}

describe('loss.png', () => {
  it('has the layout size and draws every series inside its panel', () => {
    const h = history();
    const layout = plotLayout(h);
    expect(layout.panels.map((p) => p.title)).toEqual(['lm loss', 'vm loss', 'held-out answer accuracy']);
    const png = decode(drawLossPlot(h));
    expect([png.width, png.height]).toEqual([layout.width, layout.height]);
    for (const area of layout.panels.slice(0, 2)) {
      expect(pixelsOf(png, area, PLOT_COLOURS.train).length, area.title).toBeGreaterThan(100);
      expect(pixelsOf(png, area, PLOT_COLOURS.heldout).length, area.title).toBeGreaterThan(50);
    }
    const acc = layout.panels[2]!;
    expect(pixelsOf(png, acc, PLOT_COLOURS.heldout).length).toBeGreaterThan(50);
    expect(pixelsOf(png, acc, PLOT_COLOURS.baseline).length).toBeGreaterThan(50);
    expect(pixelsOf(png, acc, PLOT_COLOURS.train)).toHaveLength(0);
  });

  it('draws a falling loss falling: the train curve sits higher on the left than on the right', () => {
    const h = history();
    const area = plotLayout(h).panels[0]!;
    const px = pixelsOf(decode(drawLossPlot(h)), area, PLOT_COLOURS.train);
    const meanY = (from: number, to: number) => {
      const sel = px.filter((p) => p.x >= area.x + from * area.width && p.x < area.x + to * area.width);
      expect(sel.length).toBeGreaterThan(0);
      return sel.reduce((a, p) => a + p.y, 0) / sel.length;
    };
    // Canvas y grows downwards: higher loss, smaller y.
    expect(meanY(0, 0.1)).toBeLessThan(meanY(0.8, 1) - area.height / 4);
  });

  it('leaves out what the history lacks: no held-out series, no accuracy panel', () => {
    const h: LossHistory = { train: history().train, heldout: [] };
    const layout = plotLayout(h);
    expect(layout.panels.map((p) => p.title)).toEqual(['lm loss', 'vm loss']);
    const png = decode(drawLossPlot(h));
    expect(png.width).toBe(layout.width);
    expect(pixelsOf(png, layout.panels[0]!, PLOT_COLOURS.heldout)).toHaveLength(0);
    expect(pixelsOf(png, layout.panels[0]!, PLOT_COLOURS.train).length).toBeGreaterThan(100);
  });

  it.runIf(plotFontsAvailable())('labels the axes: dark text pixels left of and below each plot area', () => {
    const h = history();
    const png = decode(drawLossPlot(h));
    for (const area of plotLayout(h).panels) {
      let dark = 0;
      for (let y = area.y; y < area.y + area.height + 40; y++)
        for (let x = area.x - 60; x < area.x - 4; x++) {
          const o = (y * png.width + x) * png.channels;
          if (png.data[o]! < 100 && png.data[o + 1]! < 100 && png.data[o + 2]! < 100) dark++;
        }
      expect(dark, area.title).toBeGreaterThan(40);
    }
  });

  it('is a function of the history, and refuses a non-finite value or an empty history', () => {
    expect(drawLossPlot(history()).equals(drawLossPlot(history()))).toBe(true);
    const bad = history();
    (bad.train[5]!.terms as Record<string, number>)['vm'] = NaN;
    expect(() => drawLossPlot(bad)).toThrow(/vm at step 6 is NaN/);
    expect(() => drawLossPlot({ train: [], heldout: [] })).toThrow(/empty/);
  });
});
