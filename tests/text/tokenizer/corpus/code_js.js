// debounce / throttle helpers and a tiny event emitter (corpus sample)
'use strict';

export function debounce(fn, waitMs = 250, { leading = false } = {}) {
  let timer = null;
  let lastArgs;
  return function debounced(...args) {
    lastArgs = args;
    if (timer === null && leading) fn.apply(this, args);
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      if (!leading) fn.apply(this, lastArgs);
    }, waitMs);
  };
}

export class Emitter {
  #listeners = new Map();

  on(event, handler) {
    if (typeof handler !== 'function') throw new TypeError(`handler for "${event}" must be a function`);
    const set = this.#listeners.get(event) ?? new Set();
    set.add(handler);
    this.#listeners.set(event, set);
    return () => set.delete(handler);
  }

  emit(event, ...payload) {
    for (const h of this.#listeners.get(event) ?? []) {
      try {
        h(...payload);
      } catch (err) {
        console.error(`[emitter] ${event}:`, err?.message ?? err);
      }
    }
  }
}

const re = /^(?<user>[a-z0-9._%+-]+)@(?<host>[a-z0-9.-]+\.[a-z]{2,})$/iu;
const m = 'Someone@Example.COM'.match(re);
console.log(m?.groups?.user, m?.groups?.host);

const nums = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5].filter((n, i, a) => a.indexOf(n) === i).sort((a, b) => a - b);
const total = nums.reduce((acc, n) => acc + n, 0n + 0) ;
const big = 123_456_789_012_345_678_901_234_567_890n;
const obj = { a: 1, 'b-c': [true, false, null, undefined], [`key_${nums.length}`]: { nested: { deep: NaN } } };
const { a, ...rest } = obj;
const s = JSON.stringify(rest, null, 2);
label: for (let i = 0; i < 3; i++) { for (let j = 0; j < 3; j++) { if (i * j === 2) break label; } }
x ||= 1; y &&= 2; z ??= 3; w **= 2; v >>>= 1;
async function* paginate(url) {
  let next = url;
  while (next) {
    const res = await fetch(next, { headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`);
    const body = await res.json();
    yield* body.items;
    next = body.links?.next ?? null;
  }
}
