// Training declarations: which parameters train in which stage, and the stage's optimiser,
// schedule and settings, evaluated to plain data.
import type { Call, ModuleDecl, Path, StageDecl, TrainDecl } from '../syntax/ast.js';
import { fail } from '../diagnostics.js';
import { isConst } from '../ir/dims.js';
import { suggest } from './config.js';
import type { Evaluator, Scope } from './evaluate.js';
import { describe } from './values.js';

export interface CallSpec {
  name: string;
  args: Record<string, number | string | boolean>;
}

export interface StageInfo {
  name: string;
  optimizer: CallSpec | null;
  schedule: CallSpec | null;
  settings: Record<string, number | string | boolean>;
}

export interface TrainPlan {
  /** the stage in force ('' when the model declares none). */
  stage: StageInfo | null;
  stages: string[];
  isTrainable(paramPath: string): boolean;
}

function pathText(p: Path): string {
  return p.parts.map((i) => i.name).join('.');
}

function under(path: string, prefix: string): boolean {
  return path === prefix || path.startsWith(`${prefix}.`);
}

export function resolveTrain(model: ModuleDecl, requested: string | undefined, knownPaths: readonly string[], ev: Evaluator, scope: Scope): TrainPlan {
  const decls = model.members.filter((m): m is TrainDecl => m.kind === 'train');
  if (decls.length > 1) fail('syntax', 'a model has at most one train block', decls[1]!.span);
  const train = decls[0];
  const checkPaths = (paths: readonly Path[]) => {
    for (const p of paths) {
      const t = pathText(p);
      if (!knownPaths.some((k) => under(k, t))) fail('name', `'${t}' names no submodule or parameter of ${model.name.name}${suggest(t, knownPaths.map((k) => k.split('.')[0]!))}`, p.span);
    }
  };
  if (!train) {
    if (requested) fail('usage', `--stage ${requested}: model ${model.name.name} declares no train block`);
    return { stage: null, stages: [], isTrainable: () => true };
  }
  checkPaths(train.freeze);
  const names = train.stages.map((s) => s.name.name);
  let stage: StageDecl | undefined;
  if (requested) {
    stage = train.stages.find((s) => s.name.name === requested);
    if (!stage) fail('usage', `--stage ${requested}: no such stage; ${model.name.name} has ${names.join(', ') || 'none'}`);
  } else {
    stage = train.stages[train.stages.length - 1];
  }
  const frozen = train.freeze.map(pathText);
  let trainable: string[] | null = null;
  const info: StageInfo | null = stage ? { name: stage.name.name, optimizer: null, schedule: null, settings: {} } : null;
  for (const item of stage?.items ?? []) {
    switch (item.kind) {
      case 'trainable':
        checkPaths(item.paths);
        trainable = [...(trainable ?? []), ...item.paths.map(pathText)];
        break;
      case 'freeze':
        checkPaths(item.paths);
        frozen.push(...item.paths.map(pathText));
        break;
      case 'optimizer':
        info!.optimizer = callSpec(item.call, ev, scope);
        break;
      case 'schedule':
        info!.schedule = callSpec(item.call, ev, scope);
        break;
      case 'setting':
        info!.settings[item.name.name] = plain(ev, item.value, scope);
        break;
    }
  }
  return {
    stage: info,
    stages: names,
    isTrainable: (p) => !frozen.some((f) => under(p, f)) && (trainable === null || trainable.some((t) => under(p, t))),
  };
}

function plain(ev: Evaluator, e: import('../syntax/ast.js').Expr, scope: Scope): number | string | boolean {
  const v = ev.expr(e, scope);
  if (v.kind === 'num' && isConst(v.value)) return v.value;
  if (v.kind === 'str' || v.kind === 'bool') return v.value;
  return fail('type', `expected a number, string or boolean, got ${describe(v)}`, e.span);
}

function callSpec(call: Call, ev: Evaluator, scope: Scope): CallSpec {
  if (call.callee.kind !== 'name') fail('syntax', 'expected a name like adamw(...)', call.callee.span);
  const args: Record<string, number | string | boolean> = {};
  for (const a of call.args) {
    if (!a.name) fail('syntax', `arguments here are named: ${call.callee.name}(lr = 1e-3, ...)`, a.span);
    args[a.name.name] = plain(ev, a.value, scope);
  }
  return { name: call.callee.name, args };
}
