import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ParamInfo } from '../../../compiler/ir/graph.js';
import { KilnError } from '../../../runtime/errors.js';
import { writeSafetensors } from '../../../runtime/node/safetensors-file.js';
import type { HostTensor } from '../../../runtime/tensor.js';
import {
  checkpointFromTensors,
  componentPrefix,
  globMatcher,
  loadParams,
  openCheckpointDir,
  paramRequests,
  planParams,
  type ParamRequest,
} from '../../../compiler/checkpoint/load.js';
import { expectKilnError } from '../../helpers/errors.js';

let root: string;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-ckpt-'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

let counter = 0;
function folder(files: Record<string, Record<string, HostTensor> | string>): string {
  const dir = path.join(root, `f${counter++}`);
  fs.mkdirSync(dir);
  for (const [name, content] of Object.entries(files)) {
    if (typeof content === 'string') fs.writeFileSync(path.join(dir, name), content);
    else writeSafetensors(path.join(dir, name), new Map(Object.entries(content)), name.includes('f16') ? { dtype: 'f16' } : {});
  }
  return dir;
}

const f32 = (shape: number[], start = 0): HostTensor => ({
  dtype: 'f32',
  shape,
  data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => start + i),
});
const req = (name: string, shape: number[]): ParamRequest => ({ name, shape, dtype: 'f32' });

describe('openCheckpointDir', () => {
  it('reads model.safetensors lazily', () => {
    const dir = folder({ 'model.safetensors': { 'a.weight': f32([2, 3]), 'b.bias': f32([3], 10) } });
    const v = openCheckpointDir(dir);
    expect([...v.names].sort()).toEqual(['a.weight', 'b.bias']);
    expect(v.info('a.weight')).toEqual({ dtype: 'F32', shape: [2, 3], file: path.join(dir, 'model.safetensors') });
    expect(Array.from(v.load('b.bias').data)).toEqual([10, 11, 12]);
  });

  it('reads a sharded folder through its index', () => {
    const dir = folder({
      'model-00001-of-00002.safetensors': { 'a.weight': f32([2]) },
      'model-00002-of-00002.safetensors': { 'b.weight': f32([3], 5), 'c.weight': f32([1]) },
      'model.safetensors.index.json': JSON.stringify({
        metadata: { total_size: 24 },
        weight_map: { 'a.weight': 'model-00001-of-00002.safetensors', 'b.weight': 'model-00002-of-00002.safetensors' },
      }),
    });
    const v = openCheckpointDir(dir);
    // c.weight is in a shard the index names but not in its weight_map: transformers loads it.
    expect(v.names).toEqual(['a.weight', 'b.weight', 'c.weight']);
    expect(v.warnings).toEqual([
      `${path.join(dir, 'model.safetensors.index.json')}: tensor 'c.weight' is in shard 'model-00002-of-00002.safetensors' but not in the index's weight_map; loaded from the shard, as transformers does`,
    ]);
    expect(v.info('c.weight')!.file).toBe(path.join(dir, 'model-00002-of-00002.safetensors'));
    expect(v.info('b.weight')!.file).toBe(path.join(dir, 'model-00002-of-00002.safetensors'));
    expect(Array.from(v.load('b.weight').data)).toEqual([5, 6, 7]);
  });

  it('names the index, the shard and the tensor when the index is wrong', () => {
    const shard = { 'model-1.safetensors': { 'a.weight': f32([2]) } };
    const missingShard = folder({ ...shard, 'model.safetensors.index.json': JSON.stringify({ weight_map: { 'b.weight': 'model-2.safetensors' } }) });
    expectKilnError(() => openCheckpointDir(missingShard), 'model.safetensors.index.json', "tensor 'b.weight'", "shard 'model-2.safetensors'", 'does not exist');
    const notInShard = folder({ ...shard, 'model.safetensors.index.json': JSON.stringify({ weight_map: { 'z.weight': 'model-1.safetensors' } }) });
    expectKilnError(() => openCheckpointDir(notInShard), 'model.safetensors.index.json', "tensor 'z.weight'", 'has no such tensor');
    const escape = folder({ ...shard, 'model.safetensors.index.json': JSON.stringify({ weight_map: { 'a.weight': '../model-1.safetensors' } }) });
    expectKilnError(() => openCheckpointDir(escape), "tensor 'a.weight'", 'not a file name inside the folder');
    const badJson = folder({ ...shard, 'model.safetensors.index.json': '{"weight_map": ' });
    expectKilnError(() => openCheckpointDir(badJson), 'model.safetensors.index.json', 'not valid JSON');
    const noMap = folder({ ...shard, 'model.safetensors.index.json': '{}' });
    expectKilnError(() => openCheckpointDir(noMap), 'weight_map');
  });

  it('explains folders without safetensors weights', () => {
    expectKilnError(() => openCheckpointDir(folder({ 'pytorch_model.bin': 'x' })), '.bin', 'safetensors');
    expectKilnError(() => openCheckpointDir(folder({ 'config.json': '{}' })), 'no model.safetensors');
    expectKilnError(() => openCheckpointDir(path.join(root, 'nope')), 'nope', 'no such file');
  });
});

describe('loadParams', () => {
  it('assigns every parameter its tensor as Float32Array, converting f16 files', () => {
    const dir = folder({ 'model.f16.safetensors': { 'a.weight': f32([2, 2]), 'b.bias': f32([3], 1) } });
    fs.renameSync(path.join(dir, 'model.f16.safetensors'), path.join(dir, 'model.safetensors'));
    const { tensors, absent } = loadParams([req('a.weight', [2, 2]), req('b.bias', [3])], [{ dir }]);
    expect(absent).toEqual([]);
    expect(tensors.get('a.weight')!.data).toBeInstanceOf(Float32Array);
    expect(tensors.get('a.weight')!.dtype).toBe('f32');
    expect(Array.from(tensors.get('b.bias')!.data)).toEqual([1, 2, 3]);
  });

  it('rounds wider file values into narrower parameters', () => {
    const view = checkpointFromTensors('mem', new Map([['x', { dtype: 'f32', shape: [2], data: new Float32Array([1 / 3, 1 + 2 ** -20]) } as HostTensor]]));
    const half = loadParams([{ name: 'x', shape: [2], dtype: 'f16' }], [{ dir: view }]).tensors.get('x')!;
    expect(Array.from(half.data)).toEqual([0.333251953125, 1]);
    const bf = loadParams([{ name: 'x', shape: [2], dtype: 'bf16' }], [{ dir: view }]).tensors.get('x')!;
    expect(Array.from(bf.data)).toEqual([0.333984375, 1]);
  });

  it('reads a sharded folder', () => {
    const dir = folder({
      's1.safetensors': { 'a.weight': f32([2]) },
      's2.safetensors': { 'b.weight': f32([1], 9) },
      'model.safetensors.index.json': JSON.stringify({ weight_map: { 'a.weight': 's1.safetensors', 'b.weight': 's2.safetensors' } }),
    });
    const { tensors } = loadParams([req('a.weight', [2]), req('b.weight', [1])], [{ dir }]);
    expect(Array.from(tensors.get('b.weight')!.data)).toEqual([9]);
  });

  // A CLIP folder as Hugging Face saves CLIPModel: the vision tower under vision_model.*, the text
  // tower and projections beside it, position_ids buffers in I64.
  const tower = 'model.vision_tower.vision_tower.vision_model';
  const specUnused = ['*.position_ids', 'text_model.*', 'logit_scale', 'text_projection.weight', 'visual_projection.weight'];
  const clipFolder = () =>
    folder({
      'model.safetensors': {
        'vision_model.embeddings.class_embedding': f32([4]),
        'vision_model.encoder.layers.0.mlp.fc1.weight': f32([8, 4], 100),
        'vision_model.embeddings.position_ids': { dtype: 'i32', shape: [1, 5], data: new Int32Array(5) },
        'text_model.embeddings.token_embedding.weight': f32([6, 4]),
        'text_model.encoder.layers.0.mlp.fc1.weight': f32([2, 2]),
        logit_scale: f32([]),
        'text_projection.weight': f32([2, 4]),
        'visual_projection.weight': f32([2, 4]),
      },
    });
  const towerParams = [req(`${tower}.embeddings.class_embedding`, [4]), req(`${tower}.encoder.layers.0.mlp.fc1.weight`, [8, 4])];
  const llava = () => folder({ 'model.safetensors': { 'model.mm_projector.0.weight': f32([2, 4]), 'lm_head.weight': f32([3, 2]) } });
  const llavaParams = [req('model.mm_projector.0.weight', [2, 4]), req('lm_head.weight', [3, 2])];

  it('maps a prefixed source (the --vision-tower folder) onto the tower parameters', () => {
    const { tensors } = loadParams(
      [...towerParams, ...llavaParams],
      [
        { dir: clipFolder(), prefixFrom: 'vision_model', prefixTo: tower, unused: specUnused },
        { dir: llava(), unused: specUnused },
      ],
    );
    expect(tensors.size).toBe(4);
    expect(tensors.get(`${tower}.encoder.layers.0.mlp.fc1.weight`)!.data[0]).toBe(100);
    // Trailing dots, as the brief's `prefixFrom + rest` form writes them, mean the same.
    const again = loadParams(towerParams, [{ dir: clipFolder(), prefixFrom: 'vision_model.', prefixTo: `${tower}.`, unused: specUnused }]);
    expect(again.tensors.size).toBe(2);
  });

  it('reports tensors that match no parameter and no unused pattern, up to five', () => {
    const e = expectKilnError(
      () => loadParams(towerParams, [{ dir: clipFolder(), prefixFrom: 'vision_model', prefixTo: tower }]),
      '6 tensors match no parameter',
      'vision_model.embeddings.position_ids',
      '(and 1 more)',
    );
    expect(e.file).toMatch(/f\d+$/);
    expectKilnError(
      () => loadParams(towerParams, [{ dir: clipFolder(), prefixFrom: 'vision_model', prefixTo: tower, unused: ['*.position_ids', 'text_model.*'] }]),
      '3 tensors',
      'logit_scale',
    );
  });

  it('names the missing tensor, the folder and the file name it was looked for under', () => {
    const clip = clipFolder();
    const e = expectKilnError(
      () =>
        loadParams(
          [...towerParams, req(`${tower}.post_layernorm.weight`, [4]), req(`${tower}.post_layernorm.bias`, [4]), ...llavaParams],
          [
            { dir: clip, prefixFrom: 'vision_model', prefixTo: tower, unused: specUnused },
            { dir: llava(), unused: specUnused },
          ],
        ),
      clip,
      "tensor 'vision_model.post_layernorm.weight'",
      `parameter '${tower}.post_layernorm.weight'`,
      '1 more missing',
    );
    expect(e.tensor).toBe('vision_model.post_layernorm.weight');
    expectKilnError(() => loadParams([req('vm_head.weight', [3, 2])], [{ dir: llava(), unused: ['*'] }]), "tensor 'vm_head.weight'", 'missing');
  });

  it('gives both shapes for a wrong shape', () => {
    const dir = llava();
    expectKilnError(
      () => loadParams([req('model.mm_projector.0.weight', [4, 2]), req('lm_head.weight', [3, 2])], [{ dir }]),
      path.join(dir, 'model.safetensors'),
      "tensor 'model.mm_projector.0.weight'",
      '[2, 4] in the checkpoint',
      'is [4, 2]',
    );
  });

  it('refuses integer tensors for float parameters', () => {
    expectKilnError(
      () => loadParams([req('vision_model.embeddings.position_ids', [1, 5])], [{ dir: clipFolder(), unused: ['*'] }]),
      "tensor 'vision_model.embeddings.position_ids'",
      'dtype I32',
    );
  });

  it('fills a parameter from another tensor only through an alias', () => {
    const dir = folder({ 'model.safetensors': { 'model.embed_tokens.weight': f32([3, 2], 40) } });
    const params = [req('model.embed_tokens.weight', [3, 2]), req('lm_head.weight', [3, 2])];
    expectKilnError(() => loadParams(params, [{ dir }]), "tensor 'lm_head.weight'", 'missing');
    const { tensors } = loadParams(params, [{ dir }], { aliases: [{ param: 'lm_head.weight', from: 'model.embed_tokens.weight' }] });
    expect(Array.from(tensors.get('lm_head.weight')!.data)).toEqual(Array.from(tensors.get('model.embed_tokens.weight')!.data));
  });

  it('a tied name in the file must equal the tensor it is tied to', () => {
    const params = [req('model.embed_tokens.weight', [3, 2])];
    const tied = [{ name: 'lm_head.weight', to: 'model.embed_tokens.weight' }];
    const same = folder({ 'model.safetensors': { 'model.embed_tokens.weight': f32([3, 2], 40), 'lm_head.weight': f32([3, 2], 40) } });
    expect([...loadParams(params, [{ dir: same }], { tied }).tensors.keys()]).toEqual(['model.embed_tokens.weight']);
    const absent = folder({ 'model.safetensors': { 'model.embed_tokens.weight': f32([3, 2], 40) } });
    expect([...loadParams(params, [{ dir: absent }], { tied }).tensors.keys()]).toEqual(['model.embed_tokens.weight']);
    const differs = folder({ 'model.safetensors': { 'model.embed_tokens.weight': f32([3, 2], 40), 'lm_head.weight': f32([3, 2], 41) } });
    expectKilnError(() => loadParams(params, [{ dir: differs }], { tied }), "tensor 'lm_head.weight'", "the model ties 'lm_head.weight' to 'model.embed_tokens.weight' (one tensor), but the checkpoint's 'lm_head.weight' differs");
    // Without the tie it is an unknown tensor.
    expectKilnError(() => loadParams(params, [{ dir: same }]), 'matches no parameter');
  });

  it('leaves optional parameters absent for their initialisers', () => {
    const { tensors, absent } = loadParams([...llavaParams, req('vm_head.weight', [3, 2])], [{ dir: llava() }], { optional: ['vm_head.*'] });
    expect(absent).toEqual(['vm_head.weight']);
    expect(tensors.has('vm_head.weight')).toBe(false);
  });

  it('takes a parameter from the first source that has it', () => {
    const a = checkpointFromTensors('a', new Map([['w', f32([1], 1)]]));
    const b = checkpointFromTensors('b', new Map([['w', f32([1], 2)]]));
    expect(loadParams([req('w', [1])], [{ dir: a }, { dir: b }]).tensors.get('w')!.data[0]).toBe(1);
    expect(loadParams([req('w', [1])], [{ dir: b }, { dir: a }]).tensors.get('w')!.data[0]).toBe(2);
  });

  it('validates everything before reading tensor data', () => {
    let loads = 0;
    const base = checkpointFromTensors('mem', new Map([['w', f32([2])], ['x', f32([1])]]));
    const counting = {
      ...base,
      load: (n: string) => {
        loads++;
        return base.load(n);
      },
    };
    expect(() => planParams([req('w', [2])], [{ dir: counting }])).toThrow(KilnError);
    const plan = planParams([req('w', [2]), req('x', [1])], [{ dir: counting }]);
    expect(loads).toBe(0);
    expect(plan.params.map((p) => p.tensor)).toEqual(['w', 'x']);
    plan.params[0]!.load();
    expect(loads).toBe(1);
  });
});

describe('helpers', () => {
  it('globMatcher: * spans dots, everything else is literal', () => {
    const m = globMatcher(['*.position_ids', 'text_model.*', 'a+b', 'x?']);
    expect(m('vision_model.embeddings.position_ids')).toBe(true);
    expect(m('text_model.encoder.layers.0.q.weight')).toBe(true);
    expect(m('a+b')).toBe(true);
    expect(m('aab')).toBe(false);
    expect(m('xy')).toBe(false);
    expect(m('position_ids')).toBe(false);
    expect(globMatcher([])('anything')).toBe(false);
  });

  it('paramRequests and componentPrefix read graph parameters', () => {
    const p = (name: string, component: string, shape: number[]): ParamInfo => ({
      name,
      node: 0,
      type: { dtype: 'f32', shape },
      init: { kind: 'zeros' },
      trainable: true,
      component,
      path: name,
    });
    const params = [
      p('model.vision_tower.vision_tower.vision_model.embeddings.class_embedding', 'vision_tower', [4]),
      p('model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight', 'vision_tower', [8, 4]),
      p('vm_head.weight', 'vm_head', [3, 2]),
    ];
    expect(componentPrefix(params, 'vision_tower')).toBe('model.vision_tower.vision_tower.vision_model');
    expect(componentPrefix(params, 'vm_head')).toBe('vm_head');
    expect(paramRequests(params)[1]).toEqual({ name: params[1]!.name, shape: [8, 4], dtype: 'f32' });
  });
});
