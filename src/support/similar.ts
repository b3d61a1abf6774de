import { distance } from 'fastest-levenshtein';

/**
 * The name among `known` closest to a mistyped `word` (a letter missing, added or changed, two
 * swapped), for a "did you mean" hint; undefined when none is close.
 */
export function closestName(word: string, known: readonly string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const name of known) {
    const apart = distance(word.toLowerCase(), name.toLowerCase());
    // Two letters swapped count as two changes: at least that many, in short names too.
    if (apart <= Math.max(2, Math.floor(name.length / 4)) && (best === undefined || apart < best.distance)) best = { name, distance: apart };
  }
  return best?.name;
}
