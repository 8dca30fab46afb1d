// The spec language's syntax tree. Every node carries the span of source it came from, so that
// every later diagnostic (names, configs, shapes) can point a caret at the spot.

export interface Span {
  file: string;
  /** 0-based offset of the first character, and of the character after the last. */
  start: number;
  end: number;
  /** 1-based line and column of `start`. */
  line: number;
  col: number;
}

export interface Ident {
  kind: 'ident';
  name: string;
  span: Span;
}

// ---- expressions -------------------------------------------------------------------------

export type Expr =
  | NumberLit
  | StringLit
  | BoolLit
  | NameRef
  | Member
  | Call
  | Index
  | Unary
  | Binary
  | ListLit;

export interface NumberLit {
  kind: 'number';
  value: number;
  /** true when written without '.', 'e' or 'E': the checker keeps integers exact. */
  isInt: boolean;
  /** the literal as written, so pretty-printing gives back the same token. */
  text: string;
  span: Span;
}
export interface StringLit {
  kind: 'string';
  value: string;
  span: Span;
}
export interface BoolLit {
  kind: 'bool';
  value: boolean;
  span: Span;
}
export interface NameRef {
  kind: 'name';
  name: string;
  span: Span;
}
/** `a.b`: a config field, a submodule, or a submodule's submodule. */
export interface Member {
  kind: 'member';
  object: Expr;
  property: Ident;
  span: Span;
}
export interface Arg {
  /** null for a positional argument. */
  name: Ident | null;
  value: Expr;
  span: Span;
}
export interface Call {
  kind: 'call';
  callee: Expr;
  args: Arg[];
  span: Span;
}
/** One entry of `x[...]`: a single index, a slice `a:b` (either end may be missing). */
export type IndexItem =
  | { kind: 'at'; index: Expr; span: Span }
  | { kind: 'slice'; start: Expr | null; stop: Expr | null; span: Span };
export interface Index {
  kind: 'index';
  object: Expr;
  items: IndexItem[];
  span: Span;
}
export interface Unary {
  kind: 'unary';
  op: '-' | '!';
  operand: Expr;
  span: Span;
}
export type BinaryOp = '+' | '-' | '*' | '/' | '%' | '@' | '==' | '!=' | '<' | '<=' | '>' | '>=' | '&&' | '||';
export interface Binary {
  kind: 'binary';
  op: BinaryOp;
  left: Expr;
  right: Expr;
  span: Span;
}
export interface ListLit {
  kind: 'list';
  items: Expr[];
  span: Span;
}

// ---- types -------------------------------------------------------------------------------

export type DTypeName = 'f32' | 'f16' | 'bf16' | 'i32' | 'bool';
/** `f32[B, T, c.hidden]`: dims are expressions; a bare unbound identifier is a symbolic dim. */
export interface TensorTypeExpr {
  kind: 'tensor_type';
  dtype: DTypeName;
  dims: Expr[];
  span: Span;
}

// ---- statements inside forward bodies ----------------------------------------------------

export type Stmt = LetStmt | AssignStmt | ForStmt | IfStmt | ReturnStmt | OutputStmt | LossStmt;
export interface LetStmt {
  kind: 'let';
  name: Ident;
  value: Expr;
  span: Span;
}
export interface AssignStmt {
  kind: 'assign';
  name: Ident;
  value: Expr;
  span: Span;
}
/** `for i in a .. b { ... }`, unrolled when the graph is built (a, b are config expressions). */
export interface ForStmt {
  kind: 'for';
  variable: Ident;
  from: Expr;
  to: Expr;
  body: Stmt[];
  span: Span;
}
/**
 * `if cond { ... } else { ... }`, decided when the graph is built: `cond` must be a compile-time
 * boolean (a config value), never a tensor. `else if` is an `else` holding one IfStmt.
 */
export interface IfStmt {
  kind: 'if';
  cond: Expr;
  then: Stmt[];
  else: Stmt[] | null;
  span: Span;
}
export interface ReturnStmt {
  kind: 'return';
  value: Expr;
  span: Span;
}
export interface OutputStmt {
  kind: 'output';
  name: Ident;
  value: Expr;
  span: Span;
}
/** `loss vm weight c.vm_weight = expr`; weight defaults to 1. */
export interface LossStmt {
  kind: 'loss';
  name: Ident;
  weight: Expr | null;
  value: Expr;
  span: Span;
}

// ---- module members ----------------------------------------------------------------------

export interface ParamDecl {
  kind: 'param';
  name: Ident;
  type: TensorTypeExpr;
  /** `init normal(0.02)`, `init zeros`, `init ones`: a call or a bare name. */
  init: Expr | null;
  /** `ckpt "name"`: the checkpoint name relative to the module; defaults to the param's name. */
  ckpt: StringLit | null;
  span: Span;
}
export interface SubDecl {
  kind: 'sub';
  name: Ident;
  module: Ident;
  args: Arg[];
  /** defaults to the submodule's name; "" puts its names directly under the parent. */
  ckpt: StringLit | null;
  span: Span;
}
/** `repeat layers[i in c.layers] = Layer(c) ckpt "layers.{i}"`. */
export interface RepeatDecl {
  kind: 'repeat';
  name: Ident;
  index: Ident;
  count: Expr;
  module: Ident;
  args: Arg[];
  /** must mention `{index}`; defaults to `name.{index}`. */
  ckpt: StringLit | null;
  span: Span;
}
export interface InputDecl {
  kind: 'input';
  name: Ident;
  type: TensorTypeExpr;
  span: Span;
}
export interface ForwardDecl {
  kind: 'forward';
  /** absent (null) for a model's forward, which reads its declared inputs. */
  params: Ident[] | null;
  body: Stmt[];
  span: Span;
}
/** `checkpoint vision_tower from "vision_model"`: the names this submodule has in its own folder. */
export interface CheckpointDecl {
  kind: 'checkpoint';
  sub: Ident;
  prefix: StringLit;
  span: Span;
}
/** `unused "pattern", ...`: checkpoint names that may be present and are ignored (`*` wildcard). */
export interface UnusedDecl {
  kind: 'unused';
  patterns: StringLit[];
  span: Span;
}

/**
 * `tie lm_head.weight = model.embed_tokens.weight when c.text.tie_word_embeddings`: the first
 * parameter is the second (one tensor, one gradient, loaded under the second's checkpoint name)
 * when the condition, a config boolean, holds (always without `when`).
 */
export interface TieDecl {
  kind: 'tie';
  param: Path;
  to: Path;
  when: Expr | null;
  span: Span;
}

/**
 * `buffer "model.layers.*.self_attn.rotary_emb.inv_freq" = rope_inv_freq(d, theta)`: checkpoint
 * tensors (glob) that older files carry and the model computes itself: accepted when they equal
 * the value (a list of numbers), an error naming the tensor otherwise.
 */
export interface BufferDecl {
  kind: 'buffer';
  pattern: StringLit;
  value: Expr;
  span: Span;
}

/** A dotted path naming a submodule or parameter: `model.layers`, `vm_head`. */
export interface Path {
  parts: Ident[];
  span: Span;
}
export interface StageDecl {
  kind: 'stage';
  name: Ident;
  items: StageItem[];
  span: Span;
}
export type StageItem =
  | { kind: 'trainable'; paths: Path[]; span: Span }
  | { kind: 'freeze'; paths: Path[]; span: Span }
  | { kind: 'optimizer'; call: Call; span: Span }
  | { kind: 'schedule'; call: Call; span: Span }
  | { kind: 'setting'; name: Ident; value: Expr; span: Span };
export interface TrainDecl {
  kind: 'train';
  /** parameters frozen in every stage. */
  freeze: Path[];
  stages: StageDecl[];
  span: Span;
}

export type ModuleMember = ParamDecl | SubDecl | RepeatDecl | InputDecl | ForwardDecl | CheckpointDecl | UnusedDecl | TieDecl | BufferDecl | TrainDecl;

/** `module` (reusable, has forward(args)) or `model` (an entry point: inputs, outputs, losses). */
export interface ModuleDecl {
  kind: 'module' | 'model';
  name: Ident;
  params: Ident[];
  members: ModuleMember[];
  span: Span;
}

// ---- configs -----------------------------------------------------------------------------

/** `a.b.c = expr` inside a config; a value may be another config's name (a nested record). */
export interface ConfigEntry {
  kind: 'entry';
  path: Path;
  value: Expr;
  span: Span;
}
/** `vision { ... }`: entries under a prefix. */
export interface ConfigBlock {
  kind: 'block';
  name: Ident;
  entries: ConfigItem[];
  span: Span;
}
export type ConfigItem = ConfigEntry | ConfigBlock;
export interface ConfigDecl {
  kind: 'config';
  name: Ident;
  base: Ident | null;
  items: ConfigItem[];
  span: Span;
}

export interface ImportDecl {
  kind: 'import';
  path: StringLit;
  span: Span;
}

export type TopDecl = ImportDecl | ConfigDecl | ModuleDecl;
export interface SpecFile {
  kind: 'file';
  file: string;
  decls: TopDecl[];
  span: Span;
}
