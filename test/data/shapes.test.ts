// builtin:shapes: deterministic from its seed, questions that need the picture, and the
// image-blind baseline computed from the data.
import { describe, expect, it } from 'vitest';
import { generateShapes, imageBlindBaseline, renderScene, SHAPE_COLOURS } from '../../data/shapes.js';
import { openBuiltin } from '../../data/builtin.js';

describe('builtin:shapes', () => {
  it('is the same for the same seed and different for another', () => {
    const a = generateShapes({ seed: 3, size: 50 });
    const b = generateShapes({ seed: 3, size: 50 });
    const c = generateShapes({ seed: 4, size: 50 });
    expect(a).toEqual(b);
    expect(renderScene(a[7]!.scene, 64).data).toEqual(renderScene(b[7]!.scene, 64).data);
    expect(a.map((s) => s.qa)).not.toEqual(c.map((s) => s.qa));
  });

  it('has 1000 train and 200 held-out pictures by default, each with 2 or 3 questions', () => {
    const all = generateShapes();
    expect(all.filter((s) => s.split === 'train')).toHaveLength(1000);
    expect(all.filter((s) => s.split === 'heldout')).toHaveLength(200);
    for (const s of all) {
      expect(s.questions.length).toBeGreaterThanOrEqual(2);
      expect(s.questions.length).toBeLessThanOrEqual(3);
      expect(s.qa[0]!.value.startsWith('<image>\n')).toBe(true);
      expect(s.qa.filter((t) => t.value.includes('<image>'))).toHaveLength(1);
    }
  });

  it('draws what the answers say: the colour, and one blob per shape', () => {
    for (const s of generateShapes({ size: 40 })) {
      const img = renderScene(s.scene, 64);
      const rgb = SHAPE_COLOURS[s.scene.colour];
      let n = 0;
      for (let i = 0; i < img.data.length; i += 3) if (img.data[i] === rgb[0] && img.data[i + 1] === rgb[1] && img.data[i + 2] === rgb[2]) n++;
      expect(n).toBeGreaterThan(s.scene.count * (s.scene.size === 'small' ? 15 : 50));
      if (s.scene.position === 'left') {
        // a shape on the left has more coloured pixels in the left half
        let left = 0;
        for (let y = 0; y < 64; y++) for (let x = 0; x < 32; x++) if (img.data[(y * 64 + x) * 3] === rgb[0] && img.data[(y * 64 + x) * 3 + 2] === rgb[2]) left++;
        expect(left).toBeGreaterThan(n / 2);
      }
    }
  });

  it('computes the image-blind baseline per question type (most frequent train answer)', () => {
    const all = generateShapes();
    const base = imageBlindBaseline(all.filter((s) => s.split === 'train'), all.filter((s) => s.split === 'heldout'));
    // recompute by hand for one type
    const counts = new Map<string, number>();
    for (const s of all.filter((x) => x.split === 'train')) for (const q of s.questions) if (q.type === 'colour') counts.set(q.answer, (counts.get(q.answer) ?? 0) + 1);
    const best = [...counts].sort((a, b) => b[1] - a[1])[0]![0];
    expect(base.perType['colour']!.answer).toBe(best);
    const held = all.filter((x) => x.split === 'heldout').flatMap((s) => s.questions.filter((q) => q.type === 'colour'));
    expect(base.perType['colour']!.correct).toBe(held.filter((q) => q.answer === best).length);
    expect(base.total).toBe(all.filter((x) => x.split === 'heldout').reduce((n, s) => n + s.questions.length, 0));
    // the questions need the picture: guessing without it is far from perfect for every type
    for (const e of Object.values(base.perType)) expect(e.accuracy).toBeLessThan(0.6);
    expect(base.accuracy).toBeGreaterThan(0.2);
    expect(base.accuracy).toBeLessThan(0.5);
  });

  it('opens as records with options, and rejects unknown ones', async () => {
    const d = openBuiltin('builtin:shapes?stage=1&split=heldout&size=60');
    expect(d.records).toHaveLength(10);
    expect(d.records[0]!.turns[1]!.value).toMatch(/^(one|two|three) (small|large) /);
    const img = await d.loadImage(d.records[0]!.image!);
    expect([img.width, img.height]).toEqual([64, 64]);
    expect(() => openBuiltin('builtin:shapes?colour=red')).toThrow(/unknown option 'colour'/);
    expect(() => openBuiltin('builtin:shapes?stage=3')).toThrow(/stage=3: expected 1 \(captions\), 2 \(questions\) or mix/);
    expect(() => openBuiltin('builtin:cats')).toThrow(/unknown built-in dataset 'cats'/);
  });

  it('stage=mix holds each picture\'s caption and its questions, as two records over one image', () => {
    const one = openBuiltin('builtin:shapes?stage=1&size=30');
    const two = openBuiltin('builtin:shapes?stage=2&size=30');
    const mix = openBuiltin('builtin:shapes?stage=mix&size=30');
    expect(mix.stage).toBe('mix');
    expect(mix.records).toHaveLength(2 * two.records.length);
    expect(mix.records.map((r) => r.index)).toEqual(mix.records.map((_, i) => i));
    two.records.forEach((q, i) => {
      const [c, a] = [mix.records[2 * i]!, mix.records[2 * i + 1]!];
      expect([c.image, a.image]).toEqual([q.image, q.image]);
      expect(c.turns).toEqual(one.records[i]!.turns);
      expect(a.turns).toEqual(q.turns);
      expect([c.id, a.id]).toEqual([`${q.id}-caption`, `${q.id}-qa`]);
    });
  });
});
