// What the PyTorch renderings of backward ops share (compiler/export/torch.ts): a backward op is
// written as autograd's vector-Jacobian product of its forward op's own rendering, so the two
// cannot drift apart.

/** `_vjp(f, primals, g, wrt)`: d(f(primals))/d(primals[wrt]) contracted with the cotangent g. */
export const VJP_TORCH = `def _vjp(f, primals, g, wrt):
    with torch.enable_grad():
        xs = [p.detach().requires_grad_(i == wrt) for i, p in enumerate(primals)]
        return torch.autograd.grad(f(*xs), xs[wrt], g)[0]`;

/** The index of `wrt` among `names`, for `_vjp` (an unknown name is the op's own shape error). */
export function wrtIndex(op: string, wrt: unknown, names: readonly string[]): number {
  const i = names.indexOf(String(wrt));
  if (i < 0) throw new Error(`${op}: wrt must be one of ${names.join(', ')}, got ${JSON.stringify(wrt)}`);
  return i;
}
