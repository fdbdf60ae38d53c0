import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { maxPageSize } from "../../src/handlers/shared";
import { expectRegistryError, registryFetch, uniqueImage } from "./helpers";
import { mediaTypes, pushImage, putManifestOk } from "./manifest-helpers";

interface TagList {
  name: string;
  tags: string[];
}

interface Catalog {
  repositories: string[];
}

/** Returns the URL path and query inside a `Link: <...>; rel="next"` header, or null without one. */
function nextLink(response: Response): string | null {
  const link = response.headers.get("Link");
  if (link === null) return null;
  const match = /^<(?<target>[^>]+)>; rel="next"$/.exec(link);
  expect(match, `Link header ${link}`).not.toBeNull();
  return match!.groups!.target!;
}

/** Follows `rel="next"` links from `path` and returns every page's items in order. */
async function walkPages<T>(path: string, items: (body: T) => string[]): Promise<{ all: string[]; pages: number }> {
  const all: string[] = [];
  let pages = 0;
  let next: string | null = path;
  while (next !== null) {
    const response = await registryFetch(next);
    expect(response.status).toBe(200);
    all.push(...items((await response.json()) as T));
    pages += 1;
    next = nextLink(response);
  }
  return { all, pages };
}

/** Pushes one manifest and tags it with every name, in the given order. */
async function pushTags(name: string, tags: string[]): Promise<void> {
  const image = await pushImage(name, tags[0]!);
  for (const tag of tags.slice(1)) await putManifestOk(name, tag, image.bytes, mediaTypes.ociManifest);
}

/** Splits rows into D1 statements that each stay under D1's 100 bound parameters, and runs them as one batch. */
async function batchInsert(
  sql: (placeholders: string) => string,
  fixed: unknown[],
  rows: string[],
  row: (index: number) => string,
): Promise<void> {
  const perStatement = 100 - fixed.length;
  const statements: D1PreparedStatement[] = [];
  for (let start = 0; start < rows.length; start += perStatement) {
    const chunk = rows.slice(start, start + perStatement);
    const placeholders = chunk.map((_, i) => row(fixed.length + i + 1)).join(", ");
    statements.push(env.DB.prepare(sql(placeholders)).bind(...fixed, ...chunk));
  }
  await env.DB.batch(statements);
}

/** Returns the names in a shuffled order, so insertion order never matches the sorted order. */
function shuffled(names: string[]): string[] {
  const copy = [...names];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy;
}

describe("tag list", () => {
  const tagsInPushOrder = ["v2", "latest", "V1", "1.0", "_private", "a-b", "a.b", "a_b", "Z", "10.0"];
  const tagsInByteOrder = ["1.0", "10.0", "V1", "Z", "_private", "a-b", "a.b", "a_b", "latest", "v2"];
  let name: string;

  beforeAll(async () => {
    name = uniqueImage("tags");
    await pushTags(name, tagsInPushOrder);
  });

  it("lists tags in byte order", async () => {
    const response = await registryFetch(`/v2/${name}/tags/list`);

    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toMatch(/^application\/json/);
    expect(await response.json()).toEqual({ name, tags: tagsInByteOrder });
    expect(response.headers.get("Link")).toBeNull();
  });

  it("pages with n and a next Link", async () => {
    const response = await registryFetch(`/v2/${name}/tags/list?n=3`);

    expect(((await response.json()) as TagList).tags).toEqual(["1.0", "10.0", "V1"]);
    expect(nextLink(response)).toBe(`/v2/${name}/tags/list?n=3&last=V1`);
  });

  it("starts after last, excluding last itself", async () => {
    const response = await registryFetch(`/v2/${name}/tags/list?n=3&last=V1`);

    expect(((await response.json()) as TagList).tags).toEqual(["Z", "_private", "a-b"]);
  });

  it("starts after a last that is not a tag", async () => {
    const response = await registryFetch(`/v2/${name}/tags/list?last=a`);

    expect(((await response.json()) as TagList).tags).toEqual(["a-b", "a.b", "a_b", "latest", "v2"]);
    expect(response.headers.get("Link")).toBeNull();
  });

  it("sends no Link on the last page", async () => {
    const exact = await registryFetch(`/v2/${name}/tags/list?n=2&last=latest`);
    expect(((await exact.json()) as TagList).tags).toEqual(["v2"]);
    expect(exact.headers.get("Link")).toBeNull();

    const full = await registryFetch(`/v2/${name}/tags/list?n=${tagsInByteOrder.length}`);
    expect(((await full.json()) as TagList).tags).toEqual(tagsInByteOrder);
    expect(full.headers.get("Link")).toBeNull();
  });

  it("walks every page in order", async () => {
    const { all, pages } = await walkPages<TagList>(`/v2/${name}/tags/list?n=4`, (body) => body.tags);

    expect(all).toEqual(tagsInByteOrder);
    expect(pages).toBe(3);
  });

  it("returns n=0 with an empty list", async () => {
    const response = await registryFetch(`/v2/${name}/tags/list?n=0`);

    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ name, tags: [] });
    expect(response.headers.get("Link")).toBeNull();
  });

  it("returns an empty list after the last tag", async () => {
    const response = await registryFetch(`/v2/${name}/tags/list?last=v2`);

    expect(await response.json()).toEqual({ name, tags: [] });
    expect(response.headers.get("Link")).toBeNull();
  });

  for (const n of ["-1", "abc", "1.5", "1e3", "0x10", " 5"]) {
    it(`rejects n=${JSON.stringify(n)} with PAGINATION_NUMBER_INVALID`, async () => {
      const response = await registryFetch(`/v2/${name}/tags/list?n=${encodeURIComponent(n)}`);

      await expectRegistryError(response, 400, "PAGINATION_NUMBER_INVALID");
    });
  }

  it("returns NAME_UNKNOWN for an image that was never pushed", async () => {
    await expectRegistryError(await registryFetch(`/v2/${uniqueImage("never-pushed")}/tags/list`), 404, "NAME_UNKNOWN");
  });

  it("returns an empty list for an image whose tags were deleted", async () => {
    const untagged = uniqueImage("untagged");
    await pushImage(untagged, "only");
    expect((await registryFetch(`/v2/${untagged}/manifests/only`, { method: "DELETE" })).status).toBe(202);

    const response = await registryFetch(`/v2/${untagged}/tags/list`);

    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ name: untagged, tags: [] });
  });

  it("lists only the tags of its own image", async () => {
    const sibling = `${name}-sibling`;
    await pushTags(sibling, ["sibling-only"]);

    const response = await registryFetch(`/v2/${name}/tags/list`);

    expect(((await response.json()) as TagList).tags).toEqual(tagsInByteOrder);
  });
});

describe("tag list of 10,000 tags", () => {
  const seeded = Array.from({ length: 10_000 }, (_, i) => `t${String(i).padStart(5, "0")}`);
  let name: string;

  beforeAll(async () => {
    name = uniqueImage("many-tags");
    const image = await pushImage(name, seeded[0]!);
    const row = await env.DB.prepare("SELECT id FROM images WHERE name = ?").bind(name).first<{ id: number }>();
    await batchInsert(
      (placeholders) => `INSERT INTO tags (image_id, digest, name) VALUES ${placeholders}`,
      [row!.id, image.digest],
      shuffled(seeded.slice(1)),
      (index) => `(?1, ?2, ?${index})`,
    );
  });

  it("returns all of them in one default page", async () => {
    expect(maxPageSize).toBe(10_000);

    const response = await registryFetch(`/v2/${name}/tags/list`);

    expect(((await response.json()) as TagList).tags).toEqual(seeded);
    expect(response.headers.get("Link")).toBeNull();
  });

  it("returns all of them in order across pages", async () => {
    const { all, pages } = await walkPages<TagList>(`/v2/${name}/tags/list?n=1000`, (body) => body.tags);

    expect(pages).toBe(10);
    expect(all).toEqual(seeded);
  });

  it("pages with a page size that does not divide the count", async () => {
    const { all, pages } = await walkPages<TagList>(`/v2/${name}/tags/list?n=777`, (body) => body.tags);

    expect(pages).toBe(Math.ceil(seeded.length / 777));
    expect(all).toEqual(seeded);
  });

  it("clamps an n above the maximum page size", async () => {
    await putManifestOk(name, "zz-extra", (await pushImage(name, "zz-extra-source")).bytes, mediaTypes.ociManifest);
    const expected = [...seeded, "zz-extra", "zz-extra-source"];

    const response = await registryFetch(`/v2/${name}/tags/list?n=${maxPageSize * 5}`);

    expect(response.status).toBe(200);
    const page = ((await response.json()) as TagList).tags;
    expect(page).toHaveLength(maxPageSize);
    expect(page).toEqual(expected.slice(0, maxPageSize));
    expect(nextLink(response)).toBe(`/v2/${name}/tags/list?n=${maxPageSize}&last=${expected[maxPageSize - 1]}`);

    const rest = await registryFetch(nextLink(response)!);
    expect(((await rest.json()) as TagList).tags).toEqual(expected.slice(maxPageSize));
    expect(rest.headers.get("Link")).toBeNull();
  });
});

describe("catalog", () => {
  const pushed = ["docker-local/catalog/b", "docker-local/catalog/a/nested", "docker-local/catalog/a", "docker-local/catalog-x"];
  const pushedInByteOrder = ["docker-local/catalog-x", "docker-local/catalog/a", "docker-local/catalog/a/nested", "docker-local/catalog/b"];

  beforeAll(async () => {
    // Other tests of this file push images too; the catalog tests start from none.
    await env.DB.prepare("DELETE FROM images").run();
    for (const name of pushed) await pushImage(name, "latest");
  });

  it("lists image names in byte order", async () => {
    const response = await registryFetch("/v2/_catalog");

    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toMatch(/^application\/json/);
    expect(await response.json()).toEqual({ repositories: pushedInByteOrder });
    expect(response.headers.get("Link")).toBeNull();
  });

  it("pages with n, last and a next Link", async () => {
    const first = await registryFetch("/v2/_catalog?n=2");
    expect(((await first.json()) as Catalog).repositories).toEqual(pushedInByteOrder.slice(0, 2));
    expect(nextLink(first)).toBe(`/v2/_catalog?n=2&last=${encodeURIComponent(pushedInByteOrder[1]!)}`);

    const second = await registryFetch(nextLink(first)!);
    expect(((await second.json()) as Catalog).repositories).toEqual(pushedInByteOrder.slice(2));
    expect(second.headers.get("Link")).toBeNull();
  });

  it("starts after last, excluding last itself", async () => {
    const response = await registryFetch(`/v2/_catalog?last=${encodeURIComponent("docker-local/catalog/a")}`);

    expect(((await response.json()) as Catalog).repositories).toEqual(["docker-local/catalog/a/nested", "docker-local/catalog/b"]);
  });

  it("returns n=0 with an empty list", async () => {
    const response = await registryFetch("/v2/_catalog?n=0");

    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ repositories: [] });
    expect(response.headers.get("Link")).toBeNull();
  });

  for (const n of ["-1", "abc", "2.0"]) {
    it(`rejects n=${JSON.stringify(n)} with PAGINATION_NUMBER_INVALID`, async () => {
      await expectRegistryError(await registryFetch(`/v2/_catalog?n=${n}`), 400, "PAGINATION_NUMBER_INVALID");
    });
  }

  describe("with 10,000 more images", () => {
    const seeded = Array.from({ length: 10_000 }, (_, i) => `docker-local/seed/image-${String(i).padStart(5, "0")}`);
    const all = [...pushedInByteOrder, ...seeded].sort();

    beforeAll(async () => {
      await batchInsert(
        (placeholders) => `INSERT INTO images (repository_key, name) VALUES ${placeholders}`,
        ["docker-local"],
        shuffled(seeded),
        (index) => `(?1, ?${index})`,
      );
    });

    it("returns a full default page and a Link to the rest", async () => {
      const response = await registryFetch("/v2/_catalog");

      const page = ((await response.json()) as Catalog).repositories;
      expect(page).toHaveLength(maxPageSize);
      expect(page).toEqual(all.slice(0, maxPageSize));
      expect(nextLink(response)).toBe(`/v2/_catalog?n=${maxPageSize}&last=${encodeURIComponent(all[maxPageSize - 1]!)}`);
    });

    it("clamps an n above the maximum page size", async () => {
      const response = await registryFetch(`/v2/_catalog?n=${maxPageSize + 1}`);

      expect(response.status).toBe(200);
      expect(((await response.json()) as Catalog).repositories).toEqual(all.slice(0, maxPageSize));
      expect(nextLink(response)).toBe(`/v2/_catalog?n=${maxPageSize}&last=${encodeURIComponent(all[maxPageSize - 1]!)}`);
    });

    it("returns every image in order across pages", async () => {
      const { all: walked, pages } = await walkPages<Catalog>("/v2/_catalog?n=1000", (body) => body.repositories);

      expect(pages).toBe(Math.ceil(all.length / 1000));
      expect(walked).toEqual(all);
    });
  });
});
