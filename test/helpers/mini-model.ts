// A two-layer regression model small enough to compile and run in seconds, with a training
// stage: what the artefact tests compile into loss, grads and train_step entries.
import { loadSpec } from '../../compiler/syntax/load.js';
import { checkModel, type CheckedModel } from '../../compiler/check/index.js';

export const MINI_SPEC = `config small {
  d = 8
  h = 16
}

module Lin(a, b) {
  param weight: f32[b, a] init normal(0.5)
  forward(x) {
    return linear(x, weight)
  }
}

model Mini(c) {
  input x: f32[B, T, c.d]
  input y: f32[B, T, c.d]
  sub up = Lin(c.d, c.h)
  sub down = Lin(c.h, c.d)
  forward {
    let r = down(gelu(up(x))) - y
    loss mse = mean(r * r, axis = [0, 1, 2])
  }
  train {
    stage only {
      trainable up, down
      optimizer adamw(lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01)
    }
  }
}
`;

export function miniModel(): CheckedModel {
  const { files } = loadSpec('mini.kiln', () => MINI_SPEC);
  return checkModel(files, {});
}
