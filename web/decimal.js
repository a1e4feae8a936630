// Exact decimal strings for the UI: prices and quantities arrive as decimal strings
// (docs/PROTOCOL.md) and are compared, summed and turned into percentages here without
// floating point. A value is a BigInt of units at a given number of decimal places.

/** `"123.45"` → `{ units: 12345n, places: 2 }`. */
export function parse(text) {
  const s = String(text).trim();
  const negative = s.startsWith("-");
  const body = negative ? s.slice(1) : s;
  const [whole, frac = ""] = body.split(".");
  const units = BigInt((whole || "0") + frac) * (negative ? -1n : 1n);
  return { units, places: frac.length };
}

function scaled(v, places) {
  return v.units * 10n ** BigInt(places - v.places);
}

/** `a` compared with `b`: -1, 0 or 1. */
export function compare(a, b) {
  const x = parse(a);
  const y = parse(b);
  const places = Math.max(x.places, y.places);
  const d = scaled(x, places) - scaled(y, places);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

/** The sum of decimal strings, as a decimal string. */
export function sum(values) {
  const parsed = values.map(parse);
  const places = Math.max(0, ...parsed.map((v) => v.places));
  const total = parsed.reduce((acc, v) => acc + scaled(v, places), 0n);
  return format(total, places);
}

/** `units` at `places` decimals as a string, trailing zeros kept to `places`. */
export function format(units, places) {
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(places + 1, "0");
  const text = places ? `${digits.slice(0, -places)}.${digits.slice(-places)}` : digits;
  return negative ? `-${text}` : text;
}

/**
 * `part / whole` in percent with two places (`"1.25"`), rounded half away from zero, or
 * `null` when `whole` is 0.
 */
export function percent(part, whole) {
  const p = parse(part);
  const w = parse(whole);
  const places = Math.max(p.places, w.places);
  let num = scaled(p, places) * 10000n;
  let den = scaled(w, places);
  if (den === 0n) return null;
  if (den < 0n) {
    num = -num;
    den = -den;
  }
  const sign = num < 0n ? -1n : 1n;
  return format((2n * num + sign * den) / (2n * den), 2);
}

/** Whether the decimal string is below zero. */
export function isNegative(text) {
  return parse(text).units < 0n;
}

/** Whether the decimal string is zero. */
export function isZero(text) {
  return parse(text).units === 0n;
}
