// Where the CLI writes: stdout for results, stderr for messages; tests capture both.
export class Output {
  /** spec sources read so far, for rendering diagnostics with their source lines. */
  sources = new Map<string, string>();
  readonly out: string[] = [];
  readonly err: string[] = [];
  /** capture: keep the lines in `out` and `err` (tests) instead of writing them. */
  constructor(readonly capture = false) {}

  stdout(text: string): void {
    if (this.capture) this.out.push(text);
    else process.stdout.write(`${text}\n`);
  }

  /** stdout without a newline: streamed output (generated text as it comes). */
  write(text: string): void {
    if (this.capture) this.out.push(text);
    else process.stdout.write(text);
  }

  stderr(text: string): void {
    if (this.capture) this.err.push(text);
    else process.stderr.write(`${text}\n`);
  }
}
