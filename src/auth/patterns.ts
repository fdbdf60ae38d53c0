/**
 * Matches an image path against an Ant-style pattern: `*` matches any
 * characters within one path component, `**` matches any number of whole
 * components (also none), and `?` matches one character. Matching is exact
 * and case-sensitive, and names reach it already validated as lowercase.
 */
export function matchesAntPattern(pattern: string, path: string): boolean {
  return compile(pattern).test(path);
}

const cache = new Map<string, RegExp>();

function compile(pattern: string): RegExp {
  const cached = cache.get(pattern);
  if (cached) return cached;

  const parts = pattern.split("/");
  let source = "";
  parts.forEach((part, index) => {
    const last = index === parts.length - 1;
    if (part === "**" && last) {
      // A trailing `/**` also matches the directory itself, as in Ant.
      source = index === 0 ? ".*" : `${source.slice(0, -1)}(?:/.*)?`;
      return;
    }
    if (part === "**") {
      source += "(?:[^/]+/)*";
      return;
    }
    source += part
      .replace(/[.+^${}()|[\]\\]/g, "\\$&")
      .replaceAll("*", "[^/]*")
      .replaceAll("?", "[^/]");
    if (!last) source += "/";
  });
  const regex = new RegExp(`^${source}$`);
  cache.set(pattern, regex);
  return regex;
}
