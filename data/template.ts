// Conversation templates: a LLaVA conversation rendered to the one prompt string the model is
// trained on, with the character spans the labels score (each answer and its closing EOS).
import { Template } from '@huggingface/jinja';
import { KilnError } from '../runtime/errors.js';
import type { TokenSpan } from './tokenizer.js';

/** LLaVA's conversation turn: `from` is "human" or "gpt". */
export interface Turn {
  from: 'human' | 'gpt';
  value: string;
}

export type TemplateName = 'vicuna_v1' | 'mistral' | 'chat_template';

/** The rendered prompt and the spans of `text` whose tokens are scored. */
export interface RenderedConversation {
  text: string;
  answers: TokenSpan[];
  /** whether tokenisation adds the tokenizer's BOS/EOS (false when the template writes them). */
  addSpecialTokens: boolean;
}

/** LLaVA-1.5's conv_vicuna_v1 system prompt. */
export const VICUNA_SYSTEM =
  "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

/**
 * Vicuna v1 as LLaVA-1.5's conv_vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 = EOS):
 * `SYSTEM USER: q ASSISTANT: a</s>USER: q2 ASSISTANT: a2</s>`. An answer's span starts at the
 * space after "ASSISTANT:": the inference prompt ends with "ASSISTANT:", so the model produces that
 * space (a lone "▁" before a byte-fallback character is scored; LLaVA's arithmetic scores it too).
 */
export function renderVicunaV1(turns: readonly Turn[], eos: string): RenderedConversation {
  let text = VICUNA_SYSTEM + ' ';
  const answers: TokenSpan[] = [];
  for (const t of turns) {
    if (t.from === 'human') {
      text += `USER: ${t.value} `;
    } else {
      text += 'ASSISTANT:';
      const start = text.length;
      text += ` ${t.value}${eos}`;
      answers.push({ start, end: text.length });
    }
  }
  return { text, answers, addSpecialTokens: true };
}

/** Mistral instruct as ../shared/vwlmm.md gives it: `[INST] q [/INST]a</s>[INST] q2 [/INST]a2</s>`, BOS from the tokenizer. */
export function renderMistral(turns: readonly Turn[], eos: string): RenderedConversation {
  let text = '';
  const answers: TokenSpan[] = [];
  for (const t of turns) {
    if (t.from === 'human') {
      text += `[INST] ${t.value} [/INST]`;
    } else {
      const start = text.length;
      text += t.value + eos;
      answers.push({ start, end: text.length });
    }
  }
  return { text, answers, addSpecialTokens: true };
}

/**
 * The checkpoint's own jinja `chat_template`, rendered as transformers' apply_chat_template does
 * (messages with roles user/assistant, bos_token, eos_token, add_generation_prompt false unless
 * `opts.addGenerationPrompt`, as generation asks for it; the result is tokenised without adding
 * special tokens). Each assistant message is then found in the
 * rendered text in order, and its span runs to the end of an EOS that directly follows it.
 * @throws KilnError when the template fails or an answer is not in its output verbatim.
 */
export function renderChatTemplate(turns: readonly Turn[], source: string, bos: string | null, eos: string, where: string, opts: { addGenerationPrompt?: boolean } = {}): RenderedConversation {
  let template: Template;
  try {
    template = new Template(source);
  } catch (e) {
    throw new KilnError(`chat_template: ${(e as Error).message}`, { file: where, cause: e });
  }
  const messages = turns.map((t) => ({ role: t.from === 'human' ? 'user' : 'assistant', content: t.value }));
  let text: string;
  try {
    text = template.render({
      messages,
      bos_token: bos ?? '',
      eos_token: eos,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    });
  } catch (e) {
    throw new KilnError(`chat_template: ${(e as Error).message}`, { file: where, cause: e });
  }
  const answers: TokenSpan[] = [];
  let cursor = 0;
  for (const m of messages) {
    if (m.role !== 'assistant') continue;
    const start = text.indexOf(m.content, cursor);
    if (start < 0) throw new KilnError(`chat_template: an assistant message does not appear verbatim in the rendered prompt, so its label span is unknown`, { file: where });
    let end = start + m.content.length;
    if (text.startsWith(eos, end)) end += eos.length;
    answers.push({ start, end });
    cursor = end;
  }
  return { text, answers, addSpecialTokens: false };
}
