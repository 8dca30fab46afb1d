// The user-facing error for what users hand Kiln at run time: weight files, checkpoint folders,
// config.json files, devices. The CLI prints only `error: <message>`, never a stack, so the
// message itself must say which file and which tensor; the constructor builds that prefix so
// every call site says it the same way, and keeps the parts for callers (and tests) to inspect.

export interface KilnErrorContext {
  /** the file or folder the problem is in. */
  file?: string;
  /** the tensor the problem is about. */
  tensor?: string;
  /** the underlying error (a Node fs error, a JSON SyntaxError). */
  cause?: unknown;
}

export class KilnError extends Error {
  readonly file?: string;
  readonly tensor?: string;
  /** the message without the file/tensor prefix. */
  readonly detail: string;

  constructor(detail: string, context: KilnErrorContext = {}) {
    const where = [context.file, context.tensor === undefined ? undefined : `tensor '${context.tensor}'`]
      .filter((s): s is string => s !== undefined)
      .join(': ');
    super(where === '' ? detail : `${where}: ${detail}`, context.cause === undefined ? undefined : { cause: context.cause });
    this.name = 'KilnError';
    this.detail = detail;
    if (context.file !== undefined) this.file = context.file;
    if (context.tensor !== undefined) this.tensor = context.tensor;
  }
}

/**
 * No usable WebGPU adapter (or the dawn.node package cannot load). The CLI exits 3 for it when
 * WebGPU was asked for explicitly; without --backend it falls back to the reference executor.
 */
export class NoAdapterError extends KilnError {
  constructor(detail: string, context: KilnErrorContext = {}) {
    super(detail, context);
    this.name = 'NoAdapterError';
  }
}

/** A Node fs error as one line ("no such file or directory"), without the syscall noise. */
export function describeFsError(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const reasons: Record<string, string> = {
    ENOENT: 'no such file or directory',
    EACCES: 'permission denied',
    EISDIR: 'is a directory, not a file',
    ENOTDIR: 'a parent is not a directory',
    ENOSPC: 'no space left on the device',
    EROFS: 'read-only file system',
    EPERM: 'operation not permitted',
  };
  if (typeof e.code === 'string' && reasons[e.code] !== undefined) return reasons[e.code]!;
  return typeof e.message === 'string' ? e.message : String(err);
}
