// ShapeError lives apart from builder.ts so that op files can throw it without importing the
// builder, which imports the registry, which imports every op file (a cycle that would leave the
// registry reading op definitions before they exist).

/** A shape or dtype rule rejected its inputs; the message says which dims disagree. */
export class ShapeError extends Error {
  constructor(
    message: string,
    /** which input (0-based) the complaint is about, when it is about one. */
    readonly inputIndex?: number,
  ) {
    super(message);
  }
}
