// Records -> training samples: encode each conversation, load and preprocess its image, and keep
// account of everything that was not used (malformed, unreadable image, all labels masked, too
// long) or changed (truncated). Browser-safe: images come through a loader the caller supplies.
import { KilnError } from '../runtime/errors.js';
import { CLIP_MEAN, CLIP_STD, preprocessLlava, type RgbImage } from './image.js';
import { encodeConversation, type EncodedConversation, type EncodeOptions } from './encode.js';
import type { LlavaRecord, RecordIssue } from './llava-json.js';
import type { TextTokenizer } from './tokenizer.js';

/** One training sample: ids/labels of the conversation and CHW pixels [3, S, S] (null: text only). */
export interface Sample {
  index: number;
  id: string;
  image: string | null;
  encoded: EncodedConversation;
  pixelValues: Float32Array | null;
}

/** What happened to the records, for the summary `kiln data` prints. */
export interface DataSummary {
  /** records read (after --limit). */
  records: number;
  used: number;
  malformed: RecordIssue[];
  /** image missing, unreadable or not an image; skipped (with --on-bad-image skip). */
  badImage: RecordIssue[];
  /** every label would be -100: nothing to learn, so not a sample. */
  allMasked: RecordIssue[];
  /** the prompt up to the image does not fit in the maximum length. */
  tooLong: RecordIssue[];
  /** used, but cut to the maximum length. */
  truncated: RecordIssue[];
}

export interface PrepareOptions {
  tokenizer: TextTokenizer;
  encode: EncodeOptions;
  /** side of the square model input (336 for CLIP ViT-L/14-336). */
  imageSize: number;
  /** reads and decodes an image named by a record; throws KilnError naming the file when it cannot. */
  loadImage: (name: string) => Promise<RgbImage>;
  /** 'fail' (default): the first bad image ends the run with an error naming file and record. */
  onBadImage?: 'skip' | 'fail';
}

/** A summary with nothing in it yet. */
export function emptySummary(malformed: RecordIssue[] = []): DataSummary {
  return { records: 0, used: 0, malformed: [...malformed], badImage: [], allMasked: [], tooLong: [], truncated: [] };
}

/**
 * Prepares `records` in order. Pixels are LLaVA-1.5's: expand2square with the CLIP mean colour,
 * then CLIPImageProcessor (bicubic shortest side, centre crop, CLIP mean/std).
 * @throws KilnError for a bad image when onBadImage is 'fail'.
 */
export async function prepareSamples(records: readonly LlavaRecord[], opts: PrepareOptions, summary: DataSummary = emptySummary()): Promise<{ samples: Sample[]; summary: DataSummary }> {
  const samples: Sample[] = [];
  for (const rec of records) {
    summary.records++;
    let encoded: EncodedConversation;
    try {
      encoded = encodeConversation(rec.turns, rec.image !== null, opts.tokenizer, opts.encode);
    } catch (e) {
      if (e instanceof KilnError && e.file === undefined) {
        summary.tooLong.push({ index: rec.index, id: rec.id, reason: e.detail });
        continue;
      }
      throw e;
    }
    if (encoded.allMasked) {
      summary.allMasked.push({ index: rec.index, id: rec.id, reason: encoded.truncated ? 'every answer lies beyond the maximum length' : 'no token of the prompt lies in an answer span' });
      continue;
    }
    let pixelValues: Float32Array | null = null;
    if (rec.image !== null) {
      try {
        const img = await opts.loadImage(rec.image);
        pixelValues = preprocessLlava(img, { size: opts.imageSize, mean: CLIP_MEAN, std: CLIP_STD, padToSquare: true });
      } catch (e) {
        if (!(e instanceof KilnError)) throw e;
        if ((opts.onBadImage ?? 'fail') === 'fail') {
          throw new KilnError(`record ${rec.index} (id ${rec.id}): image ${rec.image}: ${e.message} (--on-bad-image skip leaves such records out and counts them)`, { cause: e });
        }
        summary.badImage.push({ index: rec.index, id: rec.id, reason: `image ${rec.image}: ${e.message}` });
        continue;
      }
    }
    if (encoded.truncated) {
      summary.truncated.push({ index: rec.index, id: rec.id, reason: `${encoded.fullLength} positions cut to ${opts.encode.maxLength}` });
    }
    summary.used++;
    samples.push({ index: rec.index, id: rec.id, image: rec.image, encoded, pixelValues });
  }
  return { samples, summary };
}
