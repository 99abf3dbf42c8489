/**
 * `AbortSignal.any` with a fallback: the package supports Node >= 20, and `AbortSignal.any`
 * only arrived in Node 20.3. Undefined entries are skipped; undefined when none is left.
 */
export function anySignal(signals: Array<AbortSignal | undefined>): AbortSignal | undefined {
  const list = signals.filter((s): s is AbortSignal => s !== undefined);
  if (list.length <= 1) return list[0];
  if (typeof AbortSignal.any === 'function') return AbortSignal.any(list);
  const ctrl = new AbortController();
  const onAbort = (s: AbortSignal) => () => ctrl.abort(s.reason);
  for (const s of list) {
    if (s.aborted) {
      ctrl.abort(s.reason);
      break;
    }
    s.addEventListener('abort', onAbort(s), { once: true });
  }
  return ctrl.signal;
}
