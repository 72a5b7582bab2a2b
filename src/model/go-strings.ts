// Go's idea of white space, for values that Istio's Go code reads with strings.TrimSpace.
//
// JavaScript's trim() differs: it trims U+FEFF (the byte order mark), which Go keeps (so `\ufeff80` is
// not a port to Istio), and keeps U+0085 (NEL), which Go trims. strings.TrimSpace trims what
// unicode.IsSpace says: '\t', '\n', '\v', '\f', '\r', ' ', U+0085, U+00A0 in Latin-1 and, above it,
// the Unicode White_Space property (Go's unicode/tables.go: U+1680, U+2000-U+200A, U+2028, U+2029,
// U+202F, U+205F, U+3000). All of them are in the BMP, so UTF-16 code units can be compared directly.

const SPACES: ReadonlySet<number> = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028,
  0x2029, 0x202f, 0x205f, 0x3000,
]);

/** Go's unicode.IsSpace for one UTF-16 code unit. */
export function goIsSpace(codeUnit: number): boolean {
  return SPACES.has(codeUnit);
}

/** Go's strings.TrimSpace. */
export function goTrimSpace(s: string): string {
  let i = 0;
  let j = s.length;
  while (i < j && SPACES.has(s.charCodeAt(i))) i++;
  while (j > i && SPACES.has(s.charCodeAt(j - 1))) j--;
  return s.slice(i, j);
}
